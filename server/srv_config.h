/* srv_config.h: the settings of `loramux serve`.
 *
 * One table, SRV_CFG_MAP, lists every setting. It generates the srv_config_t fields, the JSON
 * keys of the config file (the setting's name), the flags (--kebab-case), the environment
 * variables (LORAMUX_UPPER_SNAKE), the defaults, the accepted ranges, `serve --help` and the
 * configuration table of the README. Adding a setting is one line here.
 *
 * Sources, later ones win:  default < config file < LORAMUX_* environment < command-line flag.
 * Any unknown key, flag or LORAMUX_* variable, and any bad value, is an error naming it and
 * where it came from; nothing is silently ignored.
 */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "llm_error.h"

/* ---- the table ---- */

/* XX(name, KIND, default, lo, hi, METAVAR, meaning)
 *   KIND     STR (owned char *), INT (int), I64 (int64_t), DBL (double), BOOL (bool),
 *            LOG (srv_log_level_t), ENUM (int: the index of the value in METAVAR, whose
 *            choices are separated by '|', e.g. "f32|bf16|int8").
 *   default  always written as text: it is parsed by the same code as a flag value, so every
 *            default is checked against its own range (the tests load the defaults).
 *   lo, hi   inclusive range of INT/I64/DBL settings (unused for the other kinds).
 *   meaning  one sentence for --help and the README; no '|' (it ends a markdown cell).
 * `model` is the only required setting (checked after all sources are read). */
#define SRV_CFG_MAP(XX)                                                                          \
    XX(model, STR, "", 0, 0, "DIR",                                                              \
       "Base model directory in Hugging Face layout (config.json, *.safetensors, "              \
       "tokenizer.json).")                                                            \
    XX(model_name, STR, "", 0, 0, "NAME",                                                        \
       "Id that clients put in \"model\" to use the base model without an adapter. "             \
       "Empty = the base name of the model directory.")                                          \
    XX(host, STR, "127.0.0.1", 0, 0, "ADDR",                                                     \
       "Address to listen on; 0.0.0.0 listens on every interface.")                              \
    XX(port, INT, "8080", 1, 65535, "N", "TCP port to listen on.")                               \
    XX(api_key, STR, "", 0, 0, "KEY",                                                            \
       "Bearer key that clients must send (Authorization: Bearer KEY). Empty, with no "          \
       "api_key_file, = no authentication.")                                                     \
    XX(api_key_file, STR, "", 0, 0, "FILE",                                                      \
       "File of accepted Bearer keys, one per line; adds to api_key. Empty = none.")             \
    XX(adapter_dir, STR, "", 0, 0, "DIR",                                                        \
       "Directory whose subdirectories are adapters loaded at start-up; an adapter's name is "   \
       "its subdirectory's name. Empty = none.")                                                 \
    XX(registry_dir, STR, "", 0, 0, "DIR",                                                       \
       "Directory of the on-disk adapter registry (uploaded adapters). Empty = none.")          \
    XX(allow_adapter_loading, BOOL, "true", 0, 0, "",                                            \
       "Enables POST /v1/load_lora_adapter and /v1/unload_lora_adapter.")                        \
    XX(adapter_memory_budget_mb, INT, "0", 0, 16777216, "MIB",                                   \
       "Memory for loaded adapters in MiB; 0 = unlimited.")                                      \
    XX(max_adapters_per_step, INT, "0", 0, 4096, "N",                                            \
       "Most distinct adapters in one engine step; 0 = unlimited. While it is reached, waiting "  \
       "requests for adapters already running are admitted first (for at most 0.5 s).")         \
    XX(max_running, INT, "32", 1, 4096, "N", "Most sequences in one engine step.")               \
    XX(max_step_tokens, INT, "512", 16, 65536, "N",                                              \
       "Token budget of one engine step; longer prompts are prefilled in chunks.")               \
    XX(max_queue, INT, "256", 0, 1000000, "N",                                                   \
       "Most requests waiting to start; beyond it a request gets 429.")                          \
    XX(max_prompt_tokens, INT, "0", 0, 16777216, "N",                                            \
       "Longest prompt accepted, in tokens (400 beyond); 0 = the model's context length.")       \
    XX(max_total_tokens, INT, "0", 0, 16777216, "N",                                             \
       "Longest prompt + max_tokens accepted (400 beyond); 0 = the model's context length.")     \
    XX(max_tokens_default, INT, "256", 1, 16777216, "N",                                         \
       "max_tokens of a request that does not set it.")                                          \
    XX(request_timeout, DBL, "600", 0, 1e7, "SECONDS",                                           \
       "Deadline of a request from its arrival; 0 = none.")                                      \
    XX(max_body_bytes, I64, "2097152", 1024, 1073741824, "BYTES",                                \
       "Largest request body (413 beyond); the default is 2 MiB.")                              \
    XX(max_upload_bytes, I64, "1073741824", 1024, 1099511627776, "BYTES",                        \
       "Largest adapter upload (413 beyond); the default is 1 GiB.")                            \
    XX(kv_cache_mb, INT, "0", 0, 16777216, "MIB",                                                \
       "KV cache size in MiB; 0 = chosen by the engine (room for max_running full-length "       \
       "sequences, limited by the memory available), and logged at start-up.")                   \
    XX(threads, INT, "0", 0, 64, "N",                                                            \
       "Compute threads, the engine thread included; 0 = the number of CPU cores.")              \
    XX(weights, ENUM, "bf16", 0, 0, "f32|bf16|int8",                                             \
       "Storage of the base model's matrices: bf16 halves the bytes each decode step reads; "     \
       "int8 (one scale per row, activations quantised per token) quarters them at some "         \
       "accuracy cost; f32 is the exact reference. The KV cache is held in bf16 with bf16 and "   \
       "int8 weights (half the memory and attention reads), in fp32 with f32.")                 \
    XX(adapter_dtype, ENUM, "bf16", 0, 0, "bf16|fp32",                                           \
       "Storage of low-rank adapter factors (LoRA, DoRA, LoRMA, LoRA² after compaction); "       \
       "the arithmetic is fp32 either way. MoRA and full transforms stay fp32.")                 \
    XX(metrics_adapter_labels, INT, "32", 0, 10000, "N",                                         \
       "Adapters with their own label value in /metrics: the first N to be used (those "         \
       "loaded at start-up first); later ones are counted under \"other\".")                    \
    XX(shutdown_grace, DBL, "30", 0, 86400, "SECONDS",                                           \
       "On SIGTERM or SIGINT, time given to running requests to finish before they are "         \
       "cancelled.")                                                                             \
    XX(log_level, LOG, "info", 0, 0, "LEVEL", "Least severe messages logged: error, warn, "      \
       "info or debug.")

/* Log levels, most severe first. XX(NAME, text) */
#define SRV_LOG_LEVEL_MAP(XX) \
    XX(ERROR, "error") XX(WARN, "warn") XX(INFO, "info") XX(DEBUG, "debug")

typedef enum {
#define XX(n, s) SRV_LOG_##n,
    SRV_LOG_LEVEL_MAP(XX)
#undef XX
} srv_log_level_t;

/* SRV_CFG_IDX_<name>: a setting's row in the table; SRV_CFG_COUNT rows in all. */
enum {
#define XX(name, kind, def, lo, hi, meta, help) SRV_CFG_IDX_##name,
    SRV_CFG_MAP(XX)
#undef XX
    SRV_CFG_COUNT
};

/* Where a setting's value came from (srv_config_t.source). */
typedef enum {
    SRV_CFG_SRC_DEFAULT = 0,
    SRV_CFG_SRC_FILE,
    SRV_CFG_SRC_ENV,
    SRV_CFG_SRC_FLAG,
} srv_cfg_source_t;

/* C type of each KIND. */
#define SRV_CFG_CTYPE_STR char *
#define SRV_CFG_CTYPE_INT int
#define SRV_CFG_CTYPE_I64 int64_t
#define SRV_CFG_CTYPE_DBL double
#define SRV_CFG_CTYPE_BOOL bool
#define SRV_CFG_CTYPE_LOG srv_log_level_t
#define SRV_CFG_CTYPE_ENUM int

/* ---- the configuration ---- */

typedef struct srv_config_s {
    /* public: one field per SRV_CFG_MAP row, named as the setting. After a successful
     * srv_cfg_load every STR field is an owned, NUL-terminated, non-NULL string (possibly "")
     * that srv_cfg_deinit frees; model is non-empty and model_name is resolved (never "").
     * Seconds are doubles, byte counts int64_t. */
#define XX(name, kind, def, lo, hi, meta, help) SRV_CFG_CTYPE_##kind name;
    SRV_CFG_MAP(XX)
#undef XX
    /* read-only */
    char *config_file;                   /* the config file read (owned), or NULL if none */
    unsigned char source[SRV_CFG_COUNT]; /* srv_cfg_source_t of each setting, by SRV_CFG_IDX_ */
} srv_config_t;

/* ---- API ---- */

/* Fills cfg for `loramux serve`. argv[0..argc) are the arguments AFTER the "serve" word
 * (main passes argc - 2, argv + 2); envp is a NULL-terminated "NAME=VALUE" array (main's envp
 * or environ; NULL = an empty environment). Neither is modified; getenv is not used.
 *
 * Order: defaults, then the config file (--config FILE, else $LORAMUX_CONFIG when non-empty):
 * a JSON object whose keys are setting names (keys starting with "//" are comments); then
 * every LORAMUX_<NAME> variable; then the flags, in order (a repeated flag: the last wins).
 * Flags: --name VALUE or --name=VALUE (a VALUE beginning with "--" needs the = form); BOOL
 * settings as --name, --no-name or --name=true|false (also 1/0, yes/no, on/off). -h/--help
 * prints srv_cfg_help to stdout and stops. Values from the environment and flags are parsed
 * strictly: a whole base-10 integer, a finite number, true/false, a log level name.
 *
 * Errors (err names the source and the setting, and the accepted values):
 *   an unknown flag, a flag without a value, an argument that is not a flag;
 *   a LORAMUX_* variable that names no setting (LORAMUX_CONFIG, LORAMUX_FIXTURES and
 *   LORAMUX_BIN excepted), e.g. "LORAMUX_PROT: not a setting (did you mean LORAMUX_PORT?)";
 *   a config file that cannot be read (-errno), is not JSON or not an object (LLM_EFORMAT), has
 *   a key that names no setting or appears twice (LLM_EINVAL): "cfg.json: key \"prot\" is not
 *   a setting (did you mean \"port\"?)", or a value of the wrong JSON type (LLM_EINVAL);
 *   a value out of range (LLM_ERANGE): "--port: \"70000\" is out of range (1..65535)";
 *   no model (LLM_EINVAL).
 * Returns: 0 with cfg filled; 1 when --help was printed (the caller exits 0); a negative
 * LLM_E* / -errno code. When it does not return 0, *cfg is zeroed (srv_cfg_deinit accepts it).
 * Meant for start-up, on the main thread (cJSON keeps a global error pointer). */
int srv_cfg_load(int argc, char **argv, char **envp, srv_config_t *cfg, llm_error_t *err);

/* Frees the owned strings of cfg and zeroes it. Accepts NULL and a zeroed cfg. */
void srv_cfg_deinit(srv_config_t *cfg);

/* Usage text of `loramux serve --help`, generated from the table: every flag with its
 * meaning, range, default and environment variable. Cannot fail (stdio errors are ignored). */
void srv_cfg_help(FILE *out);

/* The README's configuration table in GitHub markdown, generated from the table:
 * | setting | flag | environment | default | meaning |, with a first row for the config file. */
void srv_cfg_markdown(FILE *out);

/* Prints the effective configuration, one "name = value  (source)" line per setting, for the
 * start-up log. api_key is never printed ("(set)" or ""). */
void srv_cfg_dump(const srv_config_t *cfg, FILE *out);

/* Text of a log level ("info"); "?" when out of range. Static storage. */
const char *srv_cfg_log_level_name(srv_log_level_t level);

/* ENUM settings: index of text among the '|'-separated choices (-1 when absent), and the name
 * of choice ix copied into buf. */
int srv_cfg_enum_index(const char *choices, const char *text);
const char *srv_cfg_enum_name(const char *choices, int ix, char *buf, size_t cap);

#endif
