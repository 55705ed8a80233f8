/* synth_main.c: `loramux-synth`, synthetic models and adapters for tests and benchmarks.
 *
 *   loramux-synth model --out DIR [--shape tiny|smollm-135m|tinyllama-1.1b] [--vocab N]
 *                       [--tokenizer-from DIR] [--dtype f32|bf16|f16] [--seed S]
 *   loramux-synth adapter --base DIR --out DIR [--method lora|rslora|dora|mora|lorma|lora2]
 *                       [--rank R] [--targets q,k,v,o,gate,up,down] [--mora-type T]
 *                       [--lorma pre|post] [--inflation rri|shift|none] [--zero] [--seed S]
 *
 * Random weights (deterministic per seed). --tokenizer-from copies tokenizer.json,
 * tokenizer_config.json and special_tokens_map.json from a real tokenizer directory and sizes
 * the vocabulary to it, so the model can be served; its output is meaningless.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"
#include "synth_adapter.h"
#include "synth_model.h"
#include "tokenizer.h"

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb");
    if (!a) return errno == ENOENT ? 1 : -1;
    FILE *b = fopen(to, "wb");
    if (!b) {
        fclose(a);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) fwrite(buf, 1, n, b);
    fclose(a);
    return fclose(b) == 0 ? 0 : -1;
}

static int cmd_model(int argc, char **argv) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},   {"shape", required_argument, 0, 's'},
        {"vocab", required_argument, 0, 'v'}, {"tokenizer-from", required_argument, 0, 't'},
        {"dtype", required_argument, 0, 'd'}, {"seed", required_argument, 0, 'S'},
        {0, 0, 0, 0}};
    const char *out = NULL, *shape = "tiny", *tokdir = NULL, *dtype = "f32";
    int vocab = 0, c;
    unsigned long long seed = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 's': shape = optarg; break;
        case 'v': vocab = atoi(optarg); break;
        case 't': tokdir = optarg; break;
        case 'd': dtype = optarg; break;
        case 'S': seed = strtoull(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "loramux-synth model: --out DIR is required\n");
        return 2;
    }
    synth_model_opts_t o = synth_model_defaults();
    o.seed = seed;
    if (!strcmp(shape, "tiny")) {
        o.hidden = 64;
        o.intermediate = 128;
        o.n_layers = 2;
        o.n_heads = 4;
        o.n_kv_heads = 2;
        o.max_pos = 1024;
    } else if (!strcmp(shape, "smollm-135m")) {
        o.hidden = 576;
        o.intermediate = 1536;
        o.n_layers = 30;
        o.n_heads = 9;
        o.n_kv_heads = 3;
        o.vocab = 49152;
        o.max_pos = 2048;
        o.tie_embeddings = 1;
        o.rope_theta = 100000.0f;
    } else if (!strcmp(shape, "tinyllama-1.1b")) {
        o.hidden = 2048;
        o.intermediate = 5632;
        o.n_layers = 22;
        o.n_heads = 32;
        o.n_kv_heads = 4;
        o.vocab = 32000;
        o.max_pos = 2048;
    } else {
        fprintf(stderr, "loramux-synth model: unknown --shape %s\n", shape);
        return 2;
    }
    o.dtype = !strcmp(dtype, "bf16") ? CORE_DT_BF16 : !strcmp(dtype, "f16") ? CORE_DT_F16
                                                                         : CORE_DT_F32;
    mkdir(out, 0755);
    char a[4096], b[4096];
    if (tokdir) {
        llm_error_t err = {0};
        tok_tokenizer_t *tok = NULL;
        if (tok_load(tokdir, &tok, &err)) {
            fprintf(stderr, "loramux-synth: %s\n", err.msg);
            return 1;
        }
        o.vocab = tok_vocab_size(tok);
        o.bos_id = tok_bos_id(tok);
        o.eos_id = tok_eos_id(tok);
        tok_free(tok);
        static const char *const files[] = {"tokenizer.json", "tokenizer_config.json",
                                            "special_tokens_map.json"};
        for (int i = 0; i < 3; i++) {
            snprintf(a, sizeof a, "%s/%s", tokdir, files[i]);
            snprintf(b, sizeof b, "%s/%s", out, files[i]);
            if (copy_file(a, b) < 0) {
                fprintf(stderr, "loramux-synth: cannot copy %s\n", a);
                return 1;
            }
        }
    }
    if (vocab > 0) o.vocab = vocab;
    if (synth_model_write(&o, out, NULL)) return 1;
    printf("%s\n", out);
    return 0;
}

static unsigned parse_targets(const char *s) {
    unsigned m = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        for (int p = 0; p < SA_NPROJ; p++) {
            const char *n = sa_proj_name(p);
            if (!strncmp(t, n, strlen(t)) && (strlen(t) == strlen(n) || !strcmp(n + strlen(t), "_proj")))
                m |= SA_BIT(p);
        }
    }
    return m;
}

static int cmd_adapter(int argc, char **argv) {
    static const struct option opts[] = {
        {"base", required_argument, 0, 'b'},      {"out", required_argument, 0, 'o'},
        {"method", required_argument, 0, 'm'},    {"rank", required_argument, 0, 'r'},
        {"targets", required_argument, 0, 't'},   {"mora-type", required_argument, 0, 'T'},
        {"lorma", required_argument, 0, 'l'},     {"inflation", required_argument, 0, 'i'},
        {"zero", no_argument, 0, 'z'},            {"seed", required_argument, 0, 'S'},
        {"dtype", required_argument, 0, 'd'},     {"base-name", required_argument, 0, 'n'},
        {0, 0, 0, 0}};
    const char *base = NULL, *out = NULL, *method = "lora", *targets = "q,v";
    sa_opts_t o;
    int rank = 8, mora_type = 1, pre = 1, zero = 0, c;
    sa_inflation_t infl = SA_RRI;
    unsigned long long seed = 1;
    const char *dtype = "f32", *base_name = NULL;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': base = optarg; break;
        case 'o': out = optarg; break;
        case 'm': method = optarg; break;
        case 'r': rank = atoi(optarg); break;
        case 't': targets = optarg; break;
        case 'T': mora_type = atoi(optarg); break;
        case 'l': pre = !strcmp(optarg, "pre"); break;
        case 'i': infl = !strcmp(optarg, "shift") ? SA_SHIFT : !strcmp(optarg, "none") ? SA_NONE
                                                                                       : SA_RRI;
            break;
        case 'z': zero = 1; break;
        case 'S': seed = strtoull(optarg, NULL, 10); break;
        case 'd': dtype = optarg; break;
        case 'n': base_name = optarg; break;
        default: return 2;
        }
    }
    if (!base || !out) {
        fprintf(stderr, "loramux-synth adapter: --base DIR and --out DIR are required\n");
        return 2;
    }
    sa_method_t m = !strcmp(method, "rslora") ? SA_RSLORA : !strcmp(method, "dora") ? SA_DORA
                    : !strcmp(method, "mora") ? SA_MORA : !strcmp(method, "lorma") ? SA_LORMA
                    : !strcmp(method, "lora2") ? SA_LORA2 : SA_LORA;
    o = sa_opts_defaults(m);
    o.r = rank;
    o.alpha = 2.0 * rank;
    o.targets = !strcmp(targets, "all") ? SA_ALL : parse_targets(targets);
    o.mora_type = mora_type;
    o.lorma_pre = pre;
    o.inflation = infl;
    o.zero_b = zero;
    o.seed = seed;
    o.base_name = base_name;
    o.dtype = !strcmp(dtype, "bf16") ? CORE_DT_BF16 : CORE_DT_F32;
    llm_error_t err = {0};
    core_model_config_t cfg;
    if (core_model_config_load(base, &cfg, &err)) {
        fprintf(stderr, "loramux-synth: %s\n", err.msg);
        return 1;
    }
    sa_shape_t shape = sa_shape_from_config(&cfg);
    mkdir(out, 0755);
    if (sa_write(out, &shape, &o, NULL)) return 1;
    printf("%s\n", out);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "model")) return cmd_model(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "adapter")) return cmd_adapter(argc - 1, argv + 1);
    fprintf(stderr, "usage: loramux-synth model|adapter [options] (see tests/tools/synth_main.c)\n");
    return 2;
}
