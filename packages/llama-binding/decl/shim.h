/* Hypura's C shim (csrc/hypura_shim.c): the per-node eval-callback filter and small helpers.
 * The scheduler calls the eval callback for every graph node; the filter matches node names
 * ("<prefix><layer><suffix>", e.g. "ffn_norm-12") against a few rules in C and calls Python
 * only for the nodes a rule enables for that layer. */
#define HYPURA_MAX_RULES ...
#define HYPURA_MAX_LAYERS ...
#define HYPURA_ACT_SPLIT ...
#define HYPURA_ACT_NOTE ...

typedef struct hypura_filter {
    int n_rules;
    void * handle;
    uint64_t n_calls;
    uint64_t n_python;
    int failed;
    ...;
} hypura_filter;

int  hypura_filter_add_rule(hypura_filter * f, const char * prefix, const char * suffix, int action);
void hypura_filter_set_layer(hypura_filter * f, int rule, int layer, int enabled);
bool hypura_eval_cb(struct ggml_tensor * t, bool ask, void * user_data);
bool hypura_abort_cb(void * flag);
/* SIGBUS (a memory-mapped model file shrank) → `message` on stderr, exit status 74. 0: installed. */
int  hypura_report_bus_errors(const char * message);
/* llama.cpp's default-load choice of CPU extra buffer type (CPU_REPACK, …) for a MUL_MAT (n_dims 2) or
 * MUL_MAT_ID (n_dims 3) weight; NULL: plain CPU memory. */
ggml_backend_buffer_type_t hypura_cpu_extra_buft(enum ggml_type type, int64_t ne0, int64_t ne1, int64_t ne2,
                                                 int n_dims, int n_ids_used);

extern "Python" int hypura_py_node(void * handle, struct ggml_tensor * t, int ask, int rule, int layer);
extern "Python" void hypura_py_log(enum ggml_log_level level, const char * text, void * user_data);
extern "Python" void hypura_py_set_tensor(struct ggml_tensor * t, void * userdata);
