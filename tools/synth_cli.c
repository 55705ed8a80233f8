/* synth_cli.c: `loramux synth-model` and `loramux synth-adapter` (see synth_cli.h). */
#include "synth_cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_config.h"
#include "synth_adapter.h"
#include "synth_model.h"
#include "tokenizer.h"

/* ---- shapes ---- */

/* A real model's shape. vocab is what the model has when no tokenizer sizes it. */
typedef struct {
    const char *name;
    int hidden, intermediate, n_layers, n_heads, n_kv_heads, vocab, max_pos, tie;
    float rope_theta;      /* 0 = 10000 */
    const char *tokenizer; /* directory under $LORAMUX_FIXTURES with the real tokenizer, or NULL */
    const char *about;
} shape_t;

static const shape_t SHAPES[] = {
    {"tiny", 64, 128, 2, 4, 2, 128, 1024, 0, 0.0f, NULL,
     "hidden 64, 2 layers, 4/2 heads, context 1024; no tokenizer"},
    {"smollm-135m", 576, 1536, 30, 9, 3, 49152, 2048, 1, 100000.0f,
     "smollm-135m-instruct-lora-qv-r16",
     "SmolLM-135M: 30 layers of 576, 9/3 heads, tied (540 MB f32)"},
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, 0, 0.0f, "tinyllama-tokenizer-json",
     "TinyLlama-1.1B: 22 layers of 2048, 32/4 heads (4.4 GB f32)"},
};
#define N_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

/* The tokenizer files copied from --tokenizer-from; only tokenizer.json must exist. */
static const char *const TOKENIZER_FILES[] = {"tokenizer.json", "tokenizer_config.json",
                                              "special_tokens_map.json"};

/* ---- helpers ---- */

/* Strict integer in [lo, hi]; on failure prints "loramux CMD: OPT: ..." and returns -1. */
static int parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi,
                     long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr,
                "loramux %s: %s: invalid value \"%s\" (expected an integer in [%ld, %ld])\n",
                cmd, opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_seed(const char *cmd, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-') {
        fprintf(stderr, "loramux %s: --seed: invalid value \"%s\" (expected an unsigned integer)\n",
                cmd, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* "f32" / "bf16" / "f16"; -1 after a message naming --dtype. */
static int parse_dtype(const char *cmd, const char *s, core_dtype_t *out) {
    if (!strcmp(s, "f32") || !strcmp(s, "float32")) *out = CORE_DT_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *out = CORE_DT_BF16;
    else if (!strcmp(s, "f16") || !strcmp(s, "float16")) *out = CORE_DT_F16;
    else {
        fprintf(stderr, "loramux %s: --dtype: unknown dtype \"%s\" (expected f32, bf16 or f16)\n",
                cmd, s);
        return -1;
    }
    return 0;
}

/* mkdir -p. Returns 0 or -errno. */
static int make_dirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -ENAMETOOLONG;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -errno;
    struct stat st;
    if (stat(buf, &st) != 0) return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

/* Copies a file. Returns 0, 1 when `from` does not exist, or -1 on any other failure. */
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
    int ok = 1;
    while (ok && (n = fread(buf, 1, sizeof buf, a)) > 0) ok = fwrite(buf, 1, n, b) == n;
    ok = ok && !ferror(a);
    fclose(a);
    return fclose(b) == 0 && ok ? 0 : -1;
}

/* dir/name into buf; -1 when it does not fit. */
static int path_join(char *buf, size_t size, const char *dir, const char *name) {
    int n = snprintf(buf, size, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

static int file_exists(const char *dir, const char *name) {
    char path[4096];
    struct stat st;
    return path_join(path, sizeof path, dir, name) == 0 && stat(path, &st) == 0 &&
           S_ISREG(st.st_mode);
}

/* getopt_long returned '?' (unknown option) or ':' (missing value): say which, return 2.
 * opterr is 0, so getopt itself prints nothing. */
static int bad_option(const char *cmd, int c, char **argv) {
    const char *arg = optind > 0 ? argv[optind - 1] : "?";
    if (c == ':') fprintf(stderr, "loramux %s: %s: missing value\n", cmd, arg);
    else fprintf(stderr, "loramux %s: unknown option \"%s\"\n", cmd, arg);
    fprintf(stderr, "Run 'loramux %s --help' for the options.\n", cmd);
    return 2;
}

/* ---- synth-model ---- */

static void usage_model(FILE *o) {
    fprintf(o,
            "usage: loramux synth-model --out DIR [--shape NAME] [options]\n"
            "\n"
            "Writes a model with random weights (deterministic per --seed) and the shape of a\n"
            "real one into DIR, in the Hugging Face layout: config.json, model.safetensors,\n"
            "generation_config.json and the tokenizer files (tokenizer.json,\n"
            "tokenizer_config.json, special_tokens_map.json) of a real tokenizer. `loramux\n"
            "generate` and `loramux serve` load it like any checkpoint; its output is\n"
            "meaningless. For tests, benchmarks, and sizing the server for a model you do not\n"
            "have the weights of. Prints DIR on success.\n"
            "\n"
            "  --out DIR             output directory (required; created if missing)\n"
            "  --shape NAME          the model's shape (default tiny):\n");
    for (size_t i = 0; i < N_SHAPES; i++)
        fprintf(o, "      %-15s %s\n", SHAPES[i].name, SHAPES[i].about);
    fprintf(o,
            "  --tokenizer-from DIR  copy the tokenizer files from DIR and size the vocabulary\n"
            "                        to the tokenizer. Default: the shape's real tokenizer in\n"
            "                        the fixtures directory $LORAMUX_FIXTURES (smollm-135m:\n"
            "                        smollm-135m-instruct-lora-qv-r16, tinyllama-1.1b:\n"
            "                        tinyllama-tokenizer-json); tiny has none\n"
            "  --no-tokenizer        write no tokenizer files (weights and configs only)\n"
            "  --vocab N             vocabulary size (default: the tokenizer's, else the shape's;\n"
            "                        not below the tokenizer's)\n"
            "  --dtype T             storage dtype: f32 (default), bf16 or f16; bf16 halves the\n"
            "                        size (TinyLlama: 2.2 GB instead of 4.4 GB)\n"
            "  --seed S              random seed (default 1)\n"
            "  -h, --help            this help\n");
}

/* Writes DIR/generation_config.json (ids < 0 are left out). Returns 0 or -1. */
static int write_generation_config(const char *dir, int bos, int eos) {
    char path[4096];
    if (path_join(path, sizeof path, dir, "generation_config.json")) return -1;
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "{\n");
    if (bos >= 0) fprintf(f, "  \"bos_token_id\": %d,\n", bos);
    if (eos >= 0) fprintf(f, "  \"eos_token_id\": %d,\n", eos);
    fprintf(f, "  \"transformers_version\": \"4.45.0\"\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

int synth_cli_model_main(int argc, char **argv) {
    enum { O_OUT = 256, O_SHAPE, O_VOCAB, O_TOK, O_NOTOK, O_DTYPE, O_SEED };
    static const struct option opts[] = {
        {"out", required_argument, 0, O_OUT},
        {"shape", required_argument, 0, O_SHAPE},
        {"vocab", required_argument, 0, O_VOCAB},
        {"tokenizer-from", required_argument, 0, O_TOK},
        {"no-tokenizer", no_argument, 0, O_NOTOK},
        {"dtype", required_argument, 0, O_DTYPE},
        {"seed", required_argument, 0, O_SEED},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *const cmd = "synth-model";
    const char *out = NULL, *shape_name = "tiny", *tokdir = NULL;
    int no_tok = 0, c;
    long vocab = 0;
    uint64_t seed = 1;
    core_dtype_t dtype = CORE_DT_F32;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_OUT: out = optarg; break;
        case O_SHAPE: shape_name = optarg; break;
        case O_VOCAB:
            if (parse_int(cmd, "--vocab", optarg, 1, 1L << 24, &vocab)) return 2;
            break;
        case O_TOK: tokdir = optarg; break;
        case O_NOTOK: no_tok = 1; break;
        case O_DTYPE: if (parse_dtype(cmd, optarg, &dtype)) return 2; break;
        case O_SEED: if (parse_seed(cmd, optarg, &seed)) return 2; break;
        case 'h': usage_model(stdout); return 0;
        default: return bad_option(cmd, c, argv);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "loramux %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
        return 2;
    }
    if (!out || !*out) {
        fprintf(stderr, "loramux %s: --out DIR is required (see 'loramux %s --help')\n", cmd,
                cmd);
        return 2;
    }
    const shape_t *shape = NULL;
    for (size_t i = 0; i < N_SHAPES; i++)
        if (!strcmp(shape_name, SHAPES[i].name)) shape = &SHAPES[i];
    if (!shape) {
        fprintf(stderr, "loramux %s: --shape: unknown shape \"%s\" (expected", cmd, shape_name);
        for (size_t i = 0; i < N_SHAPES; i++)
            fprintf(stderr, "%s%s", i ? ", " : " ", SHAPES[i].name);
        fprintf(stderr, ")\n");
        return 2;
    }
    if (no_tok && tokdir) {
        fprintf(stderr, "loramux %s: --no-tokenizer and --tokenizer-from exclude each other\n",
                cmd);
        return 2;
    }

    /* The tokenizer: the given one, else the shape's real one among the fixtures. The path
     * comes from the environment, never from the binary. */
    char fixture_tok[4096];
    if (!tokdir && !no_tok) {
        const char *fx = getenv("LORAMUX_FIXTURES");
        if (!shape->tokenizer) {
            fprintf(stderr,
                    "loramux %s: --shape %s has no tokenizer of its own: pass --tokenizer-from "
                    "DIR (a directory with tokenizer.json), or --no-tokenizer\n",
                    cmd, shape->name);
            return 2;
        }
        if (!fx || !*fx) {
            fprintf(stderr,
                    "loramux %s: no tokenizer for --shape %s: pass --tokenizer-from DIR, or set "
                    "LORAMUX_FIXTURES to the fixtures directory (which has %s/), or pass "
                    "--no-tokenizer\n",
                    cmd, shape->name, shape->tokenizer);
            return 2;
        }
        if (path_join(fixture_tok, sizeof fixture_tok, fx, shape->tokenizer) ||
            !file_exists(fixture_tok, "tokenizer.json")) {
            fprintf(stderr,
                    "loramux %s: no tokenizer for --shape %s: %s/tokenizer.json does not exist "
                    "(LORAMUX_FIXTURES=%s); pass --tokenizer-from DIR or --no-tokenizer\n",
                    cmd, shape->name, fixture_tok, fx);
            return 2;
        }
        tokdir = fixture_tok;
    }

    synth_model_opts_t o = synth_model_defaults();
    o.hidden = shape->hidden;
    o.intermediate = shape->intermediate;
    o.n_layers = shape->n_layers;
    o.n_heads = shape->n_heads;
    o.n_kv_heads = shape->n_kv_heads;
    o.vocab = shape->vocab;
    o.max_pos = shape->max_pos;
    o.tie_embeddings = shape->tie;
    if (shape->rope_theta > 0) o.rope_theta = shape->rope_theta;
    o.dtype = dtype;
    o.seed = seed;

    /* Load the tokenizer before writing anything: a bad one fails fast and leaves no files. */
    if (tokdir) {
        llm_error_t err = {0};
        tok_tokenizer_t *tok = NULL;
        if (tok_load(tokdir, &tok, &err)) {
            fprintf(stderr, "loramux %s: --tokenizer-from %s: %s\n", cmd, tokdir, err.msg);
            return 1;
        }
        o.vocab = tok_vocab_size(tok);
        o.bos_id = tok_bos_id(tok);
        o.eos_id = tok_eos_id(tok);
        tok_free(tok);
        if (vocab > 0 && vocab < o.vocab) {
            fprintf(stderr,
                    "loramux %s: --vocab %ld is smaller than the tokenizer's vocabulary (%d ids, "
                    "%s)\n",
                    cmd, vocab, o.vocab, tokdir);
            return 2;
        }
    }
    if (vocab > 0) o.vocab = (int)vocab;
    if (o.bos_id >= o.vocab || o.eos_id >= o.vocab) {
        fprintf(stderr, "loramux %s: --vocab %d is too small for the BOS/EOS ids (%d, %d)\n", cmd,
                o.vocab, o.bos_id, o.eos_id);
        return 2;
    }

    int rc = make_dirs(out);
    if (rc) {
        fprintf(stderr, "loramux %s: --out %s: cannot create the directory: %s\n", cmd, out,
                strerror(-rc));
        return 1;
    }
    char a[4096], b[4096];
    for (size_t i = 0; tokdir && i < sizeof TOKENIZER_FILES / sizeof TOKENIZER_FILES[0]; i++) {
        if (path_join(a, sizeof a, tokdir, TOKENIZER_FILES[i]) ||
            path_join(b, sizeof b, out, TOKENIZER_FILES[i]) || copy_file(a, b) < 0) {
            fprintf(stderr, "loramux %s: cannot copy %s to %s\n", cmd, a, b);
            return 1;
        }
    }
    if (write_generation_config(out, o.bos_id, o.eos_id) != 0) {
        fprintf(stderr, "loramux %s: cannot write %s/generation_config.json\n", cmd, out);
        return 1;
    }
    /* Streaming: a TinyLlama shape would otherwise hold ~9 GB while it is written. */
    if (synth_model_write_streaming(&o, out) != 0) {
        fprintf(stderr, "loramux %s: failed to write the model to %s\n", cmd, out);
        return 1;
    }
    printf("%s\n", out);
    return 0;
}

/* ---- synth-adapter ---- */

static const struct {
    const char *name;
    sa_method_t m;
} METHODS[] = {{"lora", SA_LORA},   {"rslora", SA_RSLORA}, {"dora", SA_DORA},
               {"mora", SA_MORA},   {"lorma", SA_LORMA},   {"lora2", SA_LORA2}};
#define N_METHODS (sizeof METHODS / sizeof METHODS[0])

static void usage_adapter(FILE *o) {
    fprintf(o,
            "usage: loramux synth-adapter --base DIR --out DIR [options]\n"
            "\n"
            "Writes an adapter with random weights (deterministic per --seed) for the model in\n"
            "DIR (its config.json gives the shapes) into --out: adapter_config.json and\n"
            "adapter_model.safetensors in the PEFT layout, loadable with `loramux generate\n"
            "--adapter` and `loramux serve`. Prints the output directory on success.\n"
            "\n"
            "  --base DIR          the base model directory (required)\n"
            "  --out DIR           output directory (required; created if missing)\n"
            "  --method M          lora (default), rslora, dora, mora, lorma or lora2\n"
            "  --rank R            rank r (default 8; MoRA derives its square rank from it)\n"
            "  --alpha A           lora_alpha (default 2 x rank)\n"
            "  --targets LIST      projections, comma separated: q, k, v, o, gate, up, down\n"
            "                      (or q_proj, ...), or all (default q,v)\n"
            "  --mora-type T       MoRA compression type: 1 (default), 2, 3, 4 or 6\n"
            "  --lorma MODE        LoRMA: pre (default, W' = F W0) or post (W' = W0 F)\n"
            "  --inflation I       LoRMA rank inflation: rri (default), shift or none\n"
            "  --zero              write the B side as zeros (a no-op adapter, except DoRA)\n"
            "  --dtype T           storage dtype: f32 (default), bf16 or f16\n"
            "  --base-name NAME    base_model_name_or_path in the config (default null)\n"
            "  --seed S            random seed (default 1)\n"
            "  -h, --help          this help\n");
}

/* "q,v" / "q_proj,v_proj" / "all" -> SA_BIT mask; 0 after a message naming --targets. */
static unsigned parse_targets(const char *cmd, const char *s) {
    if (!strcmp(s, "all")) return SA_ALL;
    unsigned m = 0;
    char buf[256];
    if (snprintf(buf, sizeof buf, "%s", s) >= (int)sizeof buf) {
        fprintf(stderr, "loramux %s: --targets: list too long\n", cmd);
        return 0;
    }
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int found = -1;
        for (int p = 0; p < SA_NPROJ; p++) {
            const char *n = sa_proj_name(p); /* "q_proj" */
            size_t k = strlen(n) - strlen("_proj");
            if (!strcmp(t, n) || (strlen(t) == k && !strncmp(t, n, k))) found = p;
        }
        if (found < 0) {
            fprintf(stderr,
                    "loramux %s: --targets: unknown projection \"%s\" (expected q, k, v, o, "
                    "gate, up, down, their *_proj names, or all)\n",
                    cmd, t);
            return 0;
        }
        m |= SA_BIT(found);
    }
    if (!m) fprintf(stderr, "loramux %s: --targets: empty list \"%s\"\n", cmd, s);
    return m;
}

int synth_cli_adapter_main(int argc, char **argv) {
    enum {
        O_BASE = 256, O_OUT, O_METHOD, O_RANK, O_ALPHA, O_TARGETS, O_MORA, O_LORMA, O_INFL,
        O_ZERO, O_SEED, O_DTYPE, O_BNAME
    };
    static const struct option opts[] = {
        {"base", required_argument, 0, O_BASE},
        {"out", required_argument, 0, O_OUT},
        {"method", required_argument, 0, O_METHOD},
        {"rank", required_argument, 0, O_RANK},
        {"alpha", required_argument, 0, O_ALPHA},
        {"targets", required_argument, 0, O_TARGETS},
        {"mora-type", required_argument, 0, O_MORA},
        {"lorma", required_argument, 0, O_LORMA},
        {"inflation", required_argument, 0, O_INFL},
        {"zero", no_argument, 0, O_ZERO},
        {"seed", required_argument, 0, O_SEED},
        {"dtype", required_argument, 0, O_DTYPE},
        {"base-name", required_argument, 0, O_BNAME},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    static const char *const cmd = "synth-adapter";
    const char *base = NULL, *out = NULL, *base_name = NULL;
    sa_method_t method = SA_LORA;
    long rank = 8, mora_type = 1;
    double alpha = 0;
    unsigned targets = SA_BIT(SA_Q) | SA_BIT(SA_V);
    int pre = 1, zero = 0, c;
    sa_inflation_t infl = SA_RRI;
    uint64_t seed = 1;
    core_dtype_t dtype = CORE_DT_F32;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (c) {
        case O_BASE: base = optarg; break;
        case O_OUT: out = optarg; break;
        case O_METHOD: {
            size_t i = 0;
            while (i < N_METHODS && strcmp(optarg, METHODS[i].name)) i++;
            if (i == N_METHODS) {
                fprintf(stderr,
                        "loramux %s: --method: unknown method \"%s\" (expected lora, rslora, "
                        "dora, mora, lorma or lora2)\n",
                        cmd, optarg);
                return 2;
            }
            method = METHODS[i].m;
            break;
        }
        case O_RANK:
            if (parse_int(cmd, "--rank", optarg, 1, 65536, &rank)) return 2;
            break;
        case O_ALPHA: {
            char *end;
            errno = 0;
            alpha = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(alpha > 0 && alpha < 1e9)) {
                fprintf(stderr,
                        "loramux %s: --alpha: invalid value \"%s\" (expected a positive "
                        "number)\n",
                        cmd, optarg);
                return 2;
            }
            break;
        }
        case O_TARGETS:
            if (!(targets = parse_targets(cmd, optarg))) return 2;
            break;
        case O_MORA:
            if (parse_int(cmd, "--mora-type", optarg, 1, 6, &mora_type)) return 2;
            if (mora_type == 5) {
                fprintf(stderr, "loramux %s: --mora-type: invalid value \"5\" (expected 1, 2, "
                                "3, 4 or 6)\n", cmd);
                return 2;
            }
            break;
        case O_LORMA:
            if (strcmp(optarg, "pre") && strcmp(optarg, "post")) {
                fprintf(stderr, "loramux %s: --lorma: invalid value \"%s\" (expected pre or "
                                "post)\n", cmd, optarg);
                return 2;
            }
            pre = !strcmp(optarg, "pre");
            break;
        case O_INFL:
            if (!strcmp(optarg, "rri")) infl = SA_RRI;
            else if (!strcmp(optarg, "shift")) infl = SA_SHIFT;
            else if (!strcmp(optarg, "none")) infl = SA_NONE;
            else {
                fprintf(stderr, "loramux %s: --inflation: invalid value \"%s\" (expected rri, "
                                "shift or none)\n", cmd, optarg);
                return 2;
            }
            break;
        case O_ZERO: zero = 1; break;
        case O_SEED: if (parse_seed(cmd, optarg, &seed)) return 2; break;
        case O_DTYPE: if (parse_dtype(cmd, optarg, &dtype)) return 2; break;
        case O_BNAME: base_name = optarg; break;
        case 'h': usage_adapter(stdout); return 0;
        default: return bad_option(cmd, c, argv);
        }
    }
    if (optind != argc) {
        fprintf(stderr, "loramux %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
        return 2;
    }
    if (!base || !*base || !out || !*out) {
        fprintf(stderr, "loramux %s: %s is required (see 'loramux %s --help')\n", cmd,
                !base || !*base ? "--base DIR" : "--out DIR", cmd);
        return 2;
    }

    llm_error_t err = {0};
    core_model_config_t cfg;
    if (core_model_config_load(base, &cfg, &err)) {
        fprintf(stderr, "loramux %s: --base %s: %s\n", cmd, base, err.msg);
        return 1;
    }
    sa_opts_t o = sa_opts_defaults(method);
    o.r = (int)rank;
    o.alpha = alpha > 0 ? alpha : 2.0 * (double)rank;
    o.targets = targets;
    o.mora_type = (int)mora_type;
    o.lorma_pre = pre;
    o.inflation = infl;
    o.zero_b = zero;
    o.seed = seed;
    o.base_name = base_name;
    o.dtype = dtype;
    sa_shape_t shape = sa_shape_from_config(&cfg);
    int rc = make_dirs(out);
    if (rc) {
        fprintf(stderr, "loramux %s: --out %s: cannot create the directory: %s\n", cmd, out,
                strerror(-rc));
        return 1;
    }
    if (sa_write(out, &shape, &o, NULL) != 0) {
        fprintf(stderr, "loramux %s: failed to write the adapter to %s\n", cmd, out);
        return 1;
    }
    printf("%s\n", out);
    return 0;
}
