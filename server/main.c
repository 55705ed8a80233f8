/* main.c: the loramux command line. Subcommands: serve, generate, tokenize, config-table,
 * synth-model, synth-adapter. */
#include <errno.h>
#include <unistd.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "generate.h"
#include "model.h"
#include "srv_config.h"
#include "srv_serve.h"
#include "synth_cli.h"
#include "tokenizer.h"

#define MAX_STOPS 16

static void usage_main(FILE *o) {
    fprintf(o,
            "usage: loramux <command> [options]\n"
            "\n"
            "commands:\n"
            "  serve      run the OpenAI-compatible HTTP server (see 'loramux serve --help')\n"
            "  generate   complete a prompt with a model directory (HF layout)\n"
            "  tokenize   print the token ids of a text\n"
            "\n"
            "test and benchmark helpers:\n"
            "  synth-model    write a random model with a real model's shape (HF layout)\n"
            "  synth-adapter  write a random adapter (LoRA, DoRA, MoRA, ...) for a model\n"
            "\n"
            "Run 'loramux <command> --help' for the options of a command.\n");
}

static void usage_generate(FILE *o) {
    fprintf(o,
            "usage: loramux generate --model DIR --prompt TEXT [options]\n"
            "\n"
            "Completes TEXT with the model in DIR (config.json, *.safetensors, tokenizer.json)\n"
            "and prints the completion (not the prompt). --prompt \"\" starts from BOS alone.\n"
            "Sampling defaults follow the model's generation_config.json, as HF generate() does\n"
            "(greedy when it has no do_sample: true).\n"
            "\n"
            "  --model DIR          model directory (required)\n"
            "  --prompt TEXT        prompt text (required; may be empty)\n"
            "  --max-tokens N       tokens to generate at most (default 256, capped by context)\n"
            "  --temperature T      0 = greedy; > 0 samples\n"
            "  --top-k K            keep the K most likely tokens (0 = off)\n"
            "  --top-p P            nucleus sampling threshold in (0, 1]\n"
            "  --min-p P            drop tokens below P x the top probability\n"
            "  --repeat-penalty R   HF repetition penalty (1 = off)\n"
            "  --presence-penalty X, --frequency-penalty X   OpenAI penalties in [-2, 2]\n"
            "  --seed S             seed for sampling (default: random)\n"
            "  --stop TEXT          stop before this text (repeatable, up to %d)\n"
            "  --ignore-eos         keep generating past end-of-sequence tokens\n"
            "  --adapter DIR[:SCALE]  apply the adapter in DIR (adapter_config.json +\n"
            "                       adapter_model.safetensors) with weight SCALE (default 1);\n"
            "                       repeatable, up to %d, additive methods only when combined\n"
            "  --ids                print the generated token ids, space separated, instead\n"
            "  --weights T          base matrices as f32, bf16 (default) or int8 (per-row\n"
            "                       scales; activations quantised per token)\n"
            "  --adapter-dtype T    adapter factors as bf16 (default) or fp32; math is fp32\n"
            "  --threads N          compute threads (default 0 = one per CPU core)\n"
            "  -h, --help           this help\n",
            MAX_STOPS, ADP_SET_MAX);
}

static void usage_tokenize(FILE *o) {
    fprintf(o,
            "usage: loramux tokenize --model DIR --text TEXT [--no-special]\n"
            "\n"
            "Prints the ids of TEXT on one line, space separated. Needs only the tokenizer files\n"
            "in DIR (tokenizer.json, tokenizer_config.json, special_tokens_map.json).\n"
            "\n"
            "  --model DIR     directory with tokenizer.json (required)\n"
            "  --text TEXT     text to encode (required)\n"
            "  --no-special    do not add BOS/EOS (HF add_special_tokens=False)\n"
            "  -h, --help      this help\n");
}

static int parse_num(const char *opt, const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "loramux: %s: invalid value \"%s\" (expected a number in [%g, %g])\n",
                opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- tokenize ---- */

static int cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"text", required_argument, 0, 't'},
        {"no-special", no_argument, 0, 'n'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *dir = NULL, *text = NULL;
    int add_special = 1, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 't': text = optarg; break;
        case 'n': add_special = 0; break;
        case 'h': usage_tokenize(stdout); return 0;
        default: usage_tokenize(stderr); return 2;
        }
    }
    if (!dir || !text || optind != argc) {
        usage_tokenize(stderr);
        return 2;
    }
    llm_error_t err = {0};
    tok_tokenizer_t *tok = NULL;
    if (tok_load(dir, &tok, &err)) {
        fprintf(stderr, "loramux: %s\n", err.msg);
        return 1;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (tok_encode(tok, text, strlen(text), add_special, 1, &ids, &n, &err)) {
        fprintf(stderr, "loramux: %s\n", err.msg);
        tok_free(tok);
        return 1;
    }
    for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", ids[i]);
    printf("\n");
    free(ids);
    tok_free(tok);
    return 0;
}

/* ---- generate ---- */

static int cmd_generate(int argc, char **argv) {
    enum {
        O_TOPK = 256, O_TOPP, O_MINP, O_REP, O_PRES, O_FREQ, O_STOP, O_IGN, O_IDS, O_ADP,
        O_WEIGHTS, O_ADTYPE, O_THREADS,
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"prompt", required_argument, 0, 'p'},
        {"max-tokens", required_argument, 0, 'n'},
        {"temperature", required_argument, 0, 't'},
        {"seed", required_argument, 0, 's'},
        {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP},
        {"min-p", required_argument, 0, O_MINP},
        {"repeat-penalty", required_argument, 0, O_REP},
        {"presence-penalty", required_argument, 0, O_PRES},
        {"frequency-penalty", required_argument, 0, O_FREQ},
        {"stop", required_argument, 0, O_STOP},
        {"ignore-eos", no_argument, 0, O_IGN},
        {"ids", no_argument, 0, O_IDS},
        {"adapter", required_argument, 0, O_ADP},
        {"weights", required_argument, 0, O_WEIGHTS},
        {"adapter-dtype", required_argument, 0, O_ADTYPE},
        {"threads", required_argument, 0, O_THREADS},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *dir = NULL, *prompt = NULL;
    const char *stops[MAX_STOPS];
    char *adapter_arg[ADP_SET_MAX];
    int n_adapters = 0;
    int n_stop = 0, max_tokens = 256, print_ids = 0, ignore_eos = 0, c;
    double v;
    /* explicit sampling flags; NaN/-1 = take the model's generation_config default */
    double temp = -1, top_p = -1, min_p = 0, rep = 1, pres = 0, freq = 0;
    long top_k = -1;
    int has_seed = 0, threads = 0;
    unsigned long long seed = 0;
    kern_wtype_t weights = KERN_W_BF16;
    adp_load_opts_t lo = {.dtype = KERN_W_BF16};
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': dir = optarg; break;
        case 'p': prompt = optarg; break;
        case 'n':
            if (parse_num("--max-tokens", optarg, 1, 1e7, &v)) return 2;
            max_tokens = (int)v;
            break;
        case 't': if (parse_num("--temperature", optarg, 0, 100, &temp)) return 2; break;
        case 's':
            if (parse_num("--seed", optarg, 0, 1.8e19, &v)) return 2;
            seed = strtoull(optarg, NULL, 10);
            has_seed = 1;
            break;
        case O_TOPK:
            if (parse_num("--top-k", optarg, 0, 1e9, &v)) return 2;
            top_k = (long)v;
            break;
        case O_TOPP: if (parse_num("--top-p", optarg, 1e-9, 1, &top_p)) return 2; break;
        case O_MINP: if (parse_num("--min-p", optarg, 0, 1, &min_p)) return 2; break;
        case O_REP: if (parse_num("--repeat-penalty", optarg, 1e-6, 100, &rep)) return 2; break;
        case O_PRES: if (parse_num("--presence-penalty", optarg, -2, 2, &pres)) return 2; break;
        case O_FREQ: if (parse_num("--frequency-penalty", optarg, -2, 2, &freq)) return 2; break;
        case O_STOP:
            if (n_stop == MAX_STOPS) {
                fprintf(stderr, "loramux: --stop: at most %d stop strings\n", MAX_STOPS);
                return 2;
            }
            stops[n_stop++] = optarg;
            break;
        case O_IGN: ignore_eos = 1; break;
        case O_IDS: print_ids = 1; break;
        case O_ADP:
            if (n_adapters == ADP_SET_MAX) {
                fprintf(stderr, "loramux: --adapter: at most %d adapters\n", ADP_SET_MAX);
                return 2;
            }
            adapter_arg[n_adapters++] = optarg;
            break;
        case O_WEIGHTS:
            if (core_wtype_parse(optarg, &weights)) {
                fprintf(stderr, "loramux: --weights: expected f32, bf16 or int8, got \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case O_ADTYPE:
            if (strcmp(optarg, "bf16") && strcmp(optarg, "fp32")) {
                fprintf(stderr, "loramux: --adapter-dtype: expected bf16 or fp32, got \"%s\"\n",
                        optarg);
                return 2;
            }
            lo.dtype = optarg[0] == 'b' ? KERN_W_BF16 : KERN_W_F32;
            break;
        case O_THREADS:
            if (parse_num("--threads", optarg, 0, 64, &v)) return 2;
            threads = (int)v;
            break;
        case 'h': usage_generate(stdout); return 0;
        default: usage_generate(stderr); return 2;
        }
    }
    if (!dir || !prompt || optind != argc) {
        usage_generate(stderr);
        return 2;
    }

    llm_error_t err = {0};
    core_model_t *m = NULL;
    tok_tokenizer_t *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 1;
    adp_set_t set = {0};
    adp_adapter_t *loaded[ADP_SET_MAX] = {0};
    adp_hook_t *hook = NULL;
    core_lin_hook_t lin_hook;
    if (core_model_load_as(dir, weights, &m, &err) || tok_load(dir, &tok, &err)) {
        fprintf(stderr, "loramux: %s\n", err.msg);
        goto out;
    }
    for (int i = 0; i < n_adapters; i++) {
        /* DIR[:SCALE]: the scale is what follows the last ':' when it parses as a number */
        char *path = adapter_arg[i], *colon = strrchr(path, ':');
        double scale = 1.0;
        if (colon) {
            char *end;
            double v = strtod(colon + 1, &end);
            if (end != colon + 1 && *end == '\0') {
                scale = v;
                *colon = '\0';
            }
        }
        const char *nm = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        if (adp_load_dir(m, path, nm, &lo, &loaded[i], &err)) {
            fprintf(stderr, "loramux: %s\n", err.msg);
            goto out;
        }
        set.a[set.n] = loaded[i];
        set.w[set.n++] = (float)scale;
    }
    if (adp_set_validate(&set, &err)) {
        fprintf(stderr, "loramux: %s\n", err.msg);
        goto out;
    }
    if (set.n > 0) {
        if (adp_hook_create(m, 512, &hook)) {
            fprintf(stderr, "loramux: out of memory\n");
            goto out;
        }
        adp_hook_bind(hook, &lin_hook);
    }
    if (tok_encode(tok, prompt, strlen(prompt), 1, 1, &ids, &n_ids, &err)) {
        fprintf(stderr, "loramux: %s\n", err.msg);
        goto out;
    }
    if (n_ids == 0) { /* a tokenizer that adds no BOS: start from the model's BOS */
        int32_t bos = tok_bos_id(tok) >= 0 ? tok_bos_id(tok) : m->cfg.bos_id;
        if (bos < 0) {
            fprintf(stderr, "loramux: empty prompt and the model has no BOS token\n");
            goto out;
        }
        free(ids);
        ids = malloc(sizeof *ids);
        if (!ids) goto out;
        ids[0] = bos;
        n_ids = 1;
    }
    if ((int64_t)n_ids >= m->cfg.max_pos) {
        fprintf(stderr, "loramux: prompt has %zu tokens; the context length is %d\n", n_ids,
                m->cfg.max_pos);
        goto out;
    }
    if ((int64_t)n_ids + max_tokens > m->cfg.max_pos) max_tokens = m->cfg.max_pos - (int)n_ids;

    smp_params_t sp = smp_params_default();
    const core_model_config_t *mc = &m->cfg;
    sp.temperature = temp >= 0 ? (float)temp : mc->gen_do_sample ? mc->gen_temperature : 0.0f;
    sp.top_p = top_p > 0 ? (float)top_p : mc->gen_do_sample ? mc->gen_top_p : 1.0f;
    sp.top_k = top_k >= 0 ? (int)top_k : mc->gen_do_sample ? mc->gen_top_k : 0;
    sp.min_p = (float)min_p;
    sp.repetition_penalty = (float)rep;
    sp.presence_penalty = (float)pres;
    sp.frequency_penalty = (float)freq;
    sp.seed = seed;
    sp.has_seed = has_seed;

    core_gen_req_t req = {.prompt = ids, .n_prompt = (int)n_ids, .max_tokens = max_tokens,
                          .sampling = sp, .stop = stops, .n_stop = n_stop,
                          .ignore_eos = ignore_eos, .adapter = set.n ? &set : NULL};
    core_gen_opts_t go = {.max_step_tokens = 512, .hook = set.n ? &lin_hook : NULL,
                          .n_threads = threads};
    if (core_generate(m, tok, &req, 1, &go, &err)) {
        fprintf(stderr, "loramux: %s\n", err.msg);
        goto out;
    }
    if (print_ids) {
        for (int i = 0; i < req.n_ids; i++) printf("%s%d", i ? " " : "", req.ids[i]);
        printf("\n");
    } else {
        fwrite(req.text, 1, req.text_len, stdout);
        printf("\n");
    }
    core_gen_req_clear(&req);
    rc = 0;
out:
    adp_hook_free(hook);
    for (int i = 0; i < ADP_SET_MAX; i++) adp_adapter_unref(loaded[i]);
    free(ids);
    tok_free(tok);
    core_model_free(m);
    return rc;
}

/* Debian's OpenBLAS 0.3.21 does not recognise Zen 5 and falls back to its Haswell kernels;
 * with OPENBLAS_CORETYPE=SkylakeX prefill GEMMs run 1.7x faster on AVX-512 CPUs
 * (performance.md §2.3). OpenBLAS reads the variable in its load-time constructor, so the
 * only way to set it from inside is to re-exec once with it set. A user's own setting wins. */
static void select_openblas_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE") || !__builtin_cpu_supports("avx512f")) return;
    setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: carry on with the default core */
}

int main(int argc, char **argv) {
    select_openblas_core(argv);
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        usage_main(stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) return srv_serve_main(argc - 2, argv + 2);
    if (strcmp(cmd, "config-table") == 0) { /* the README's configuration table */
        srv_cfg_markdown(stdout);
        return 0;
    }
    if (strcmp(cmd, "generate") == 0) return cmd_generate(argc - 1, argv + 1);
    if (strcmp(cmd, "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(cmd, "synth-model") == 0) return synth_cli_model_main(argc - 1, argv + 1);
    if (strcmp(cmd, "synth-adapter") == 0) return synth_cli_adapter_main(argc - 1, argv + 1);
    fprintf(stderr, "loramux: unknown command \"%s\"\n", cmd);
    usage_main(stderr);
    return 2;
}
