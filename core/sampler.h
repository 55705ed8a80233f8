/* sampler.h: turns one row of logits into the next token.
 *
 * Order of operations (as vLLM / HF): penalties on the raw logits (repetition over prompt and
 * generated tokens; presence and frequency over generated tokens only), then temperature,
 * then top-k, top-p, min-p, then a draw. temperature == 0 means greedy (argmax; ties go to the
 * lowest id), and the filters are then irrelevant.
 *
 * Each sequence owns its sampler and its RNG, so a seeded request gives the same tokens
 * whatever else shares its batch. Not thread-safe per instance; distinct instances are
 * independent.
 */
#ifndef CORE_SAMPLER_H
#define CORE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "llm_error.h"

typedef struct smp_params_s {
    float temperature;        /* >= 0; 0 = greedy */
    int top_k;                /* <= 0 = off */
    float top_p;              /* in (0, 1]; 1 = off */
    float min_p;              /* in [0, 1]; 0 = off */
    float repetition_penalty; /* > 0; 1 = off (HF: divide positive logits, multiply negative) */
    float presence_penalty;   /* [-2, 2]; 0 = off (OpenAI) */
    float frequency_penalty;  /* [-2, 2]; 0 = off (OpenAI) */
    uint64_t seed;
    int has_seed;             /* 0: seeded from the OS (getrandom) */
} smp_params_t;

/* The defaults: temperature 1, all filters and penalties off, no seed. */
smp_params_t smp_params_default(void);

/* Checks ranges; fills err naming the parameter ("top_p must be in (0, 1], got 1.5"). */
int smp_params_validate(const smp_params_t *p, llm_error_t *err);

typedef struct smp_sampler_s {
    /* read-only */
    smp_params_t params;
    int vocab_size;
    /* private */
    uint64_t rng[4];       /* xoshiro256** state */
    uint32_t *counts;      /* (vocab_size) generated-token counts, for presence/frequency */
    uint8_t *seen;         /* (vocab_size) prompt or generated, for repetition penalty */
    float *probs;          /* (vocab_size) scratch */
    int32_t *idx;          /* (vocab_size) scratch */
} smp_sampler_t;

/* Allocates the per-sequence state (done once per request, not per token).
 * Returns 0, LLM_ENOMEM, or LLM_EINVAL with err filled for bad params. */
int smp_init(smp_sampler_t *s, const smp_params_t *p, int vocab_size, llm_error_t *err);
/* Accepts NULL and zeroed structs. */
void smp_deinit(smp_sampler_t *s);

/* Records a token for the penalties: is_prompt = 1 for prompt tokens (repetition only). */
void smp_observe(smp_sampler_t *s, int32_t token, int is_prompt);

/* Picks the next token from logits (vocab_size floats; modified in place: penalties and
 * temperature are applied to it). Does not call smp_observe(). Never allocates. */
int32_t smp_sample(smp_sampler_t *s, float *logits);

/* Greedy argmax with ties to the lowest id; a free helper for tests and the engine. */
int32_t smp_argmax(const float *logits, int n);

#endif
