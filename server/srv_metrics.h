/* srv_metrics.h: the server's Prometheus metrics registry (text exposition format 0.0.4).
 *
 * One registry per server. HTTP threads report finished requests, the engine thread reports
 * steps, per-token latencies and gauges, the adapter cache reports loads and evictions, and
 * GET /metrics calls srv_met_render(). Names are prefixed loramux_; a few vllm: series are
 * exported as well so that LoRA-aware routers (k8s Gateway Inference Extension, llm-d) can
 * route to this server as they would to vLLM. Series (label sets in braces):
 *
 *   loramux_requests_total{adapter,status}           counter, status = HTTP code ("200")
 *   loramux_prompt_tokens_total{adapter}              counter
 *   loramux_generation_tokens_total{adapter}          counter
 *   loramux_time_to_first_token_seconds{adapter}      histogram
 *   loramux_inter_token_latency_seconds{adapter}      histogram
 *   loramux_e2e_request_latency_seconds{adapter}      histogram
 *   loramux_request_queue_time_seconds{adapter}       histogram
 *   loramux_requests_running, loramux_requests_waiting, loramux_kv_blocks_used,
 *   loramux_kv_blocks_total, loramux_adapters_resident, loramux_adapter_bytes_resident   gauges
 *   loramux_adapter_loads_total, loramux_adapter_evictions_total,
 *   loramux_adapter_load_failures_total               counters
 *   loramux_adapter_load_seconds                      histogram (successful loads only)
 *   loramux_engine_step_seconds                       histogram
 *   loramux_engine_step_tokens                        histogram, buckets 1, 2, 4, ..., 4096
 *   loramux_engine_step_adapters                      histogram, distinct adapters per step
 *   vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc (0-1) gauges
 *   vllm:lora_requests_info{max_lora,running_lora_adapters,waiting_lora_adapters}
 *       gauge whose value is the wall-clock time (Unix seconds) of the last srv_met_lora_info();
 *       absent until the first call
 *   vllm:prompt_tokens_total, vllm:generation_tokens_total   counters (sums over all adapters)
 *
 * Latency buckets (seconds): 0.001 0.0025 0.005 0.01 0.025 0.05 0.075 0.1 0.15 0.2 0.3 0.5
 * 0.75 1 2.5 5 10 20 30 60 (+Inf). Adapter loads: 0.001 0.0025 0.005 ... 2.5 5 10 20 30 60.
 * Distinct adapters per step: 0 1 2 3 4 5 6 8 10 12 16 24 32 48 64.
 *
 * Bounded adapter cardinality. The adapter label takes at most K + 2 values: "base" (the base
 * model, never counted against K), up to K adapter names, and "other". Policy: an adapter gets
 * its own label slot the first time srv_met_adapter() sees it while a slot is free; once all K
 * slots are taken, every further adapter is reported as adapter="other". Slots are sticky for
 * the life of the registry. Why not a moving "top-K by traffic": moving an adapter out of a
 * slot would either make its series vanish and later restart at 0 (a counter reset that
 * rate() over sum by (adapter) misreads) or fold its history into "other" (which would then
 * jump), and sum over adapters would stop being equal to the totals. With sticky slots every
 * counter is monotonic and "other" is exactly the traffic of the adapters without a slot.
 * To give the adapters that matter a slot first, resolve them at start-up (pinned or preloaded
 * adapters): srv_met_adapter() claims a slot without recording any traffic.
 * Names that would clash with the fixed values ("base", "other", or, after replacing invalid
 * UTF-8 with U+FFFD, the label of another slot) are reported as "other".
 * Only resolve names the registry knows: a request for an unknown adapter (HTTP 404) should be
 * counted under SRV_MET_OTHER, or any client could use up the K slots with made-up names.
 *
 * Thread safety: every function may be called from any thread; one internal mutex serialises
 * them. The per-step and per-token calls (srv_met_itl, srv_met_step, srv_met_gauges) and
 * srv_met_request_done never allocate: all histograms are preallocated per slot at creation.
 * Every function accepts m == NULL and then does nothing (metrics disabled).
 * Numbers are formatted with printf, so LC_NUMERIC must stay "C" (the default).
 */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

/* Content-Type of srv_met_render()'s output. */
#define SRV_MET_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Fixed label indices returned by srv_met_adapter(); named adapters get 2 .. K + 1. */
#define SRV_MET_BASE 0  /* adapter="base" */
#define SRV_MET_OTHER 1 /* adapter="other" */

/* Largest K accepted by srv_met_create(). */
#define SRV_MET_MAX_ADAPTER_LABELS 1024

typedef struct srv_met_s srv_met_t;

/* Creates a registry with at most max_adapter_labels (K, 0 .. SRV_MET_MAX_ADAPTER_LABELS)
 * named adapter label values; K = 0 reports every adapter as "other".
 * Returns: new, caller frees with srv_met_free(); NULL if K is out of range or out of memory. */
srv_met_t *srv_met_create(int max_adapter_labels);
/* Frees m. Accepts NULL. No other call on m may be running or follow. */
void srv_met_free(srv_met_t *m);

/* Resolves an adapter name (borrowed; NULL or "" = the base model) to a label index, claiming
 * a free slot the first time a name is seen (see the policy above). Call once per request and
 * pass the index to the other calls. Returns SRV_MET_BASE, SRV_MET_OTHER or 2 .. K + 1; never
 * fails (out of memory while claiming a slot gives SRV_MET_OTHER). Cost: O(K) hash compares. */
int srv_met_adapter(srv_met_t *m, const char *name);

/* Records one finished request (any outcome) for adapter index `adapter` (out-of-range indices
 * count as SRV_MET_OTHER): loramux_requests_total{status=http_status} (codes outside 100..599
 * are reported as status="unknown"), prompt and generation tokens (negative counts as 0), and
 * one observation in each latency histogram. A negative or non-finite duration means "not
 * measured" and is not observed (e.g. ttft_s < 0 when no token was produced, queue_s < 0 when
 * the request was rejected before queueing). Never allocates; cannot fail. */
void srv_met_request_done(srv_met_t *m, int adapter, int http_status, int prompt_tokens,
                          int gen_tokens, double e2e_s, double queue_s, double ttft_s);

/* Records a whole engine step's inter-token latencies in one lock: token i of the step
 * belongs to adapter index adapters[i] and came seconds[i] after its sequence's previous
 * token. Both arrays (n entries) are borrowed. Negative / non-finite entries are skipped.
 * Never allocates; cannot fail. */
void srv_met_itl(srv_met_t *m, const int *adapters, const double *seconds, int n);

/* Records one engine step: its duration, tokens processed (prefill + decode) and the number
 * of distinct adapters in the batch. Never allocates; cannot fail. */
void srv_met_step(srv_met_t *m, double seconds, int tokens, int distinct_adapters);

/* Sets the gauges (also vllm:num_requests_*, and vllm:kv_cache_usage_perc = kv_used /
 * kv_total, 0 when kv_total is 0). Never allocates; cannot fail. */
void srv_met_gauges(srv_met_t *m, int running, int waiting, int kv_used, int kv_total,
                    int adapters_resident, long long adapter_bytes);

/* Counts one adapter load attempt: ok != 0 adds to loramux_adapter_loads_total and observes
 * seconds in loramux_adapter_load_seconds; ok == 0 adds to loramux_adapter_load_failures_total.
 * Cannot fail. */
void srv_met_adapter_load(srv_met_t *m, double seconds, int ok);
/* Counts one adapter eviction. Cannot fail. */
void srv_met_adapter_evicted(srv_met_t *m);

/* Sets vllm:lora_requests_info: max_lora (per-step adapter limit), comma-separated names of the
 * adapters of running and of waiting requests (borrowed, copied; NULL = ""), and the current
 * wall-clock time as its value. Call once per engine step (or whenever the sets change).
 * Allocates only when a list is longer than any before. Returns 0, or LLM_ENOMEM (the
 * previous value is then kept). */
int srv_met_lora_info(srv_met_t *m, int max_lora, const char *running_csv,
                      const char *waiting_csv);

/* Renders the whole exposition (HELP and TYPE for every family, samples grouped by family).
 * The counters are copied under the lock and formatted outside it, so a scrape does not stall
 * the engine. Returns: new NUL-terminated string, caller frees with free(); NULL when m is
 * NULL or out of memory. */
char *srv_met_render(srv_met_t *m);

#endif
