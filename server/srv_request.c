#include "srv_request.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void (*g_release)(adp_adapter_t *a);

void srv_req_set_adapter_release(void (*release)(adp_adapter_t *a)) { g_release = release; }

double srv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

srv_request_t *srv_req_create(int n_prompts, int n_per_prompt) {
    srv_request_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->n_prompts = n_prompts;
    r->n_per_prompt = n_per_prompt;
    r->n_choices = n_prompts * n_per_prompt;
    r->prompts = calloc((size_t)n_prompts, sizeof *r->prompts);
    r->prompt_lens = calloc((size_t)n_prompts, sizeof *r->prompt_lens);
    r->choices = calloc((size_t)r->n_choices, sizeof *r->choices);
    if (!r->prompts || !r->prompt_lens || !r->choices) {
        free(r->prompts);
        free(r->prompt_lens);
        free(r->choices);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 1;
    r->t_arrival = srv_now();
    return r;
}

void srv_req_ref(srv_request_t *r) { __atomic_add_fetch(&r->refs, 1, __ATOMIC_ACQ_REL); }

void srv_req_unref(srv_request_t *r) {
    if (!r || __atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    for (int i = 0; i < r->n_prompts; i++) free(r->prompts[i]);
    free(r->prompts);
    free(r->prompt_lens);
    for (int i = 0; i < r->n_choices; i++) {
        free(r->choices[i].text);
        free(r->choices[i].toks);
    }
    free(r->choices);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    for (int i = 0; i < r->adapters.n; i++) {
        adp_adapter_t *a = (adp_adapter_t *)r->adapters.a[i];
        if (g_release) g_release(a);
        else adp_adapter_unref(a);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

int srv_choice_append(srv_choice_t *c, const char *s, size_t n) {
    if (c->text_len + n + 1 > c->text_cap) {
        size_t cap = c->text_cap ? c->text_cap : 256;
        while (cap < c->text_len + n + 1) cap *= 2;
        char *t = realloc(c->text, cap);
        if (!t) return LLM_ENOMEM;
        c->text = t;
        c->text_cap = cap;
    }
    memcpy(c->text + c->text_len, s, n);
    c->text_len += n;
    c->text[c->text_len] = '\0';
    return 0;
}

int srv_choice_add_tok(srv_choice_t *c, const srv_tok_info_t *t) {
    if (!c->toks || c->n_gen > c->toks_cap) {
        int cap = c->toks_cap ? c->toks_cap * 2 : 64;
        srv_tok_info_t *nt = realloc(c->toks, (size_t)cap * sizeof *nt);
        if (!nt) return LLM_ENOMEM;
        c->toks = nt;
        c->toks_cap = cap;
    }
    c->toks[c->n_gen - 1] = *t;
    return 0;
}
