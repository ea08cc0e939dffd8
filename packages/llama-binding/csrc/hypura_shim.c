/* Hypura's C shim: the per-node filter of the scheduler's eval callback.
 *
 * ggml_backend_sched_compute_splits asks cb(node, ask=true) node after node until one returns
 * true, computes that run of nodes, synchronizes the backend, then calls cb(node, ask=false).
 * A SPLIT rule answers true at ask=true and hands the ask=false call to Python (the weights of
 * the layer are made resident there, before any later node is launched). A NOTE rule calls
 * Python at ask=true and answers false (no split: e.g. remember the router's top-k tensor
 * without breaking kernel fusion). Every other node costs a few byte compares here. */
#include <string.h>

#define HYPURA_MAX_RULES 16
#define HYPURA_MAX_LAYERS 1024
#define HYPURA_ACT_SPLIT 1
#define HYPURA_ACT_NOTE 2
#define HYPURA_PATTERN_LEN 48

typedef struct hypura_filter {
    int n_rules;
    void * handle;          /* passed back to Python: identifies the owning stream engine */
    uint64_t n_calls;       /* every callback invocation */
    uint64_t n_python;      /* invocations forwarded to Python */
    int failed;             /* set once Python reported an error: stop the graph */
    char prefix[HYPURA_MAX_RULES][HYPURA_PATTERN_LEN];
    size_t prefix_len[HYPURA_MAX_RULES];
    char suffix[HYPURA_MAX_RULES][HYPURA_PATTERN_LEN];
    int action[HYPURA_MAX_RULES];
    unsigned char layers[HYPURA_MAX_RULES][HYPURA_MAX_LAYERS];
} hypura_filter;

static int hypura_py_node(void * handle, struct ggml_tensor * t, int ask, int rule, int layer);

int hypura_filter_add_rule(hypura_filter * f, const char * prefix, const char * suffix, int action) {
    if (f->n_rules >= HYPURA_MAX_RULES || strlen(prefix) >= HYPURA_PATTERN_LEN ||
        strlen(suffix) >= HYPURA_PATTERN_LEN || (action != HYPURA_ACT_SPLIT && action != HYPURA_ACT_NOTE)) {
        return -1;
    }
    int r = f->n_rules++;
    strcpy(f->prefix[r], prefix);
    f->prefix_len[r] = strlen(prefix);
    strcpy(f->suffix[r], suffix);
    f->action[r] = action;
    memset(f->layers[r], 0, HYPURA_MAX_LAYERS);
    return r;
}

void hypura_filter_set_layer(hypura_filter * f, int rule, int layer, int enabled) {
    if (rule >= 0 && rule < f->n_rules && layer >= 0 && layer < HYPURA_MAX_LAYERS) {
        f->layers[rule][layer] = enabled ? 1 : 0;
    }
}

/* Match "<prefix><digits><suffix>" exactly; return the layer number or -1. */
static int hypura_match(const hypura_filter * f, int r, const char * name) {
    if (strncmp(name, f->prefix[r], f->prefix_len[r]) != 0) {
        return -1;
    }
    const char * p = name + f->prefix_len[r];
    if (*p < '0' || *p > '9') {
        return -1;
    }
    int layer = 0;
    while (*p >= '0' && *p <= '9') {
        layer = layer * 10 + (*p - '0');
        if (layer >= HYPURA_MAX_LAYERS) {
            return -1;
        }
        p++;
    }
    return strcmp(p, f->suffix[r]) == 0 ? layer : -1;
}

bool hypura_eval_cb(struct ggml_tensor * t, bool ask, void * user_data) {
    hypura_filter * f = (hypura_filter *) user_data;
    f->n_calls++;
    if (f->failed) {
        /* an earlier read failed: stop at the next split point, never compute on stale weights */
        return ask ? true : false;
    }
    const char * name = t->name;
    for (int r = 0; r < f->n_rules; r++) {
        if (name[0] != f->prefix[r][0]) {
            continue;
        }
        int layer = hypura_match(f, r, name);
        if (layer < 0 || !f->layers[r][layer]) {
            continue;
        }
        if (f->action[r] == HYPURA_ACT_NOTE) {
            if (ask) {
                f->n_python++;
                if (!hypura_py_node(f->handle, t, 1, r, layer)) {
                    f->failed = 1;
                    return true;
                }
            }
            return false;
        }
        if (ask) {
            return true;
        }
        f->n_python++;
        if (!hypura_py_node(f->handle, t, 0, r, layer)) {
            f->failed = 1;
            return false;
        }
        return true;
    }
    return false;
}

bool hypura_abort_cb(void * flag) {
    return *(volatile int *) flag != 0;
}
/* The CPU extra buffer type (CPU_REPACK, …) that llama.cpp's default load gives a weight used by
 * MUL_MAT (n_dims 2) or MUL_MAT_ID (n_dims 3), asked the way its loader asks: the op built in a
 * no_alloc context, the weight in a dummy buffer of each extra type in order, the CPU device's
 * supports_op. NULL: none (plain CPU memory). */
ggml_backend_buffer_type_t hypura_cpu_extra_buft(enum ggml_type type, int64_t ne0, int64_t ne1, int64_t ne2,
                                                 int n_dims, int n_ids_used) {
    ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (cpu == NULL) return NULL;
    ggml_backend_dev_get_extra_bufts_t get_extra = (ggml_backend_dev_get_extra_bufts_t)
        ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts");
    if (get_extra == NULL) return NULL;
    struct ggml_init_params params = { ggml_tensor_overhead() * 8, NULL, true };
    struct ggml_context * ctx = ggml_init(params);
    if (ctx == NULL) return NULL;
    struct ggml_tensor * op;
    struct ggml_tensor * w;
    if (n_dims == 3) {
        w = ggml_new_tensor_3d(ctx, type, ne0, ne1, ne2);
        struct ggml_tensor * b = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, ne0, n_ids_used, 512);
        struct ggml_tensor * ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, n_ids_used, 512);
        op = ggml_mul_mat_id(ctx, w, b, ids);
    } else {
        w = ggml_new_tensor_2d(ctx, type, ne0, ne1);
        struct ggml_tensor * b = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, ne0, 512, 1, 1);
        op = ggml_mul_mat(ctx, w, b);
    }
    ggml_backend_buffer_type_t found = NULL;
    for (ggml_backend_buffer_type_t * extra = get_extra(cpu); extra && *extra && !found; ++extra) {
        w->buffer = ggml_backend_buft_alloc_buffer(*extra, 0);
        if (ggml_backend_dev_supports_op(cpu, op)) found = *extra;
        ggml_backend_buffer_free(w->buffer);
        w->buffer = NULL;
    }
    ggml_free(ctx);
    return found;
}

/* A memory-mapped model file that shrinks under the process (truncated, rewritten in place) turns the next
 * read of a page past its new end into SIGBUS, inside llama.cpp's compute threads: nothing can be resumed
 * there. hypura_report_bus_errors installs a handler that writes one line (the caller's message) to stderr
 * and exits with status 74 (EX_IOERR) instead of a core dump and a page of backtrace. */
#include <signal.h>
#include <unistd.h>

static char hypura_bus_msg[1024];
static size_t hypura_bus_len;

static void hypura_on_sigbus(int sig) {
    (void) sig;
    ssize_t ignored = write(2, hypura_bus_msg, hypura_bus_len);
    (void) ignored;
    _exit(74);
}

int hypura_report_bus_errors(const char * message) {
    size_t n = strlen(message);
    if (n >= sizeof hypura_bus_msg - 1) n = sizeof hypura_bus_msg - 2;
    memcpy(hypura_bus_msg, message, n);
    hypura_bus_msg[n] = '\n';
    hypura_bus_len = n + 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hypura_on_sigbus;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGBUS, &sa, NULL);
}
