/* Curated subset of ggml.h / ggml-backend.h / ggml-cpu.h used by Hypura (cffi cdef, API mode).
 * Fields and enum values written as `...` are filled in by the C compiler from the vendored
 * headers, so a layout change in llama.cpp fails the build instead of reading wrong memory. */

enum ggml_type { GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q8_0,
                 GGML_TYPE_Q4_K, GGML_TYPE_Q6_K, GGML_TYPE_BF16, GGML_TYPE_I8, GGML_TYPE_I32, GGML_TYPE_COUNT, ... };
enum ggml_op { GGML_OP_NONE, GGML_OP_MUL_MAT, GGML_OP_MUL_MAT_ID, GGML_OP_GET_ROWS, GGML_OP_VIEW,
               GGML_OP_RESHAPE, ... };
enum ggml_log_level { GGML_LOG_LEVEL_NONE, GGML_LOG_LEVEL_DEBUG, GGML_LOG_LEVEL_INFO,
                      GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR, GGML_LOG_LEVEL_CONT, ... };
enum ggml_numa_strategy { GGML_NUMA_STRATEGY_DISABLED, ... };
enum ggml_status { GGML_STATUS_SUCCESS, ... };

#define GGML_MAX_DIMS ...
#define GGML_MAX_NAME ...

struct ggml_backend_buffer;
struct ggml_tensor {
    enum ggml_type type;
    struct ggml_backend_buffer * buffer;
    int64_t ne[4];
    size_t  nb[4];
    enum ggml_op op;
    struct ggml_tensor * src[...];
    struct ggml_tensor * view_src;
    size_t view_offs;
    void * data;
    char name[...];
    void * extra;   /* a CPU extra buffer type's per-tensor traits (CPU_REPACK: its repack kind) */
    ...;
};

typedef void (*ggml_log_callback)(enum ggml_log_level level, const char * text, void * user_data);
typedef bool (*ggml_backend_sched_eval_callback)(struct ggml_tensor * t, bool ask, void * user_data);
typedef bool (*ggml_abort_callback)(void * data);

struct ggml_context;
struct ggml_init_params {
    size_t mem_size;
    void * mem_buffer;
    bool   no_alloc;
};
struct ggml_context * ggml_init(struct ggml_init_params params);
void                  ggml_free(struct ggml_context * ctx);
size_t                ggml_tensor_overhead(void);
struct ggml_tensor *  ggml_new_tensor(struct ggml_context * ctx, enum ggml_type type, int n_dims, const int64_t * ne);
struct ggml_tensor *  ggml_get_tensor(struct ggml_context * ctx, const char * name);
struct ggml_tensor *  ggml_set_name(struct ggml_tensor * tensor, const char * name);
int                   ggml_n_dims(const struct ggml_tensor * tensor);
size_t       ggml_nbytes(const struct ggml_tensor * tensor);
size_t       ggml_row_size(enum ggml_type type, int64_t ne);
int64_t      ggml_blck_size(enum ggml_type type);
size_t       ggml_type_size(enum ggml_type type);
const char * ggml_type_name(enum ggml_type type);
const char * ggml_op_name(enum ggml_op op);
bool         ggml_is_contiguous(const struct ggml_tensor * tensor);

/* backend: buffer types, buffers, devices, events */
typedef struct ggml_backend_buffer_type * ggml_backend_buffer_type_t;
typedef struct ggml_backend_buffer * ggml_backend_buffer_t;
typedef struct ggml_backend * ggml_backend_t;
typedef struct ggml_backend_event * ggml_backend_event_t;
typedef struct ggml_backend_device * ggml_backend_dev_t;
typedef struct ggml_backend_reg * ggml_backend_reg_t;

enum ggml_backend_dev_type { GGML_BACKEND_DEVICE_TYPE_CPU, GGML_BACKEND_DEVICE_TYPE_GPU,
                             GGML_BACKEND_DEVICE_TYPE_IGPU, GGML_BACKEND_DEVICE_TYPE_ACCEL, ... };
enum ggml_backend_buffer_usage { GGML_BACKEND_BUFFER_USAGE_ANY, GGML_BACKEND_BUFFER_USAGE_WEIGHTS,
                                 GGML_BACKEND_BUFFER_USAGE_COMPUTE, ... };

const char *          ggml_backend_buft_name(ggml_backend_buffer_type_t buft);
ggml_backend_buffer_t ggml_backend_buft_alloc_buffer(ggml_backend_buffer_type_t buft, size_t size);
size_t                ggml_backend_buft_get_alignment(ggml_backend_buffer_type_t buft);
size_t                ggml_backend_buft_get_alloc_size(ggml_backend_buffer_type_t buft, const struct ggml_tensor * tensor);
bool                  ggml_backend_buft_is_host(ggml_backend_buffer_type_t buft);
ggml_backend_dev_t    ggml_backend_buft_get_device(ggml_backend_buffer_type_t buft);

const char *               ggml_backend_buffer_name(ggml_backend_buffer_t buffer);
void                       ggml_backend_buffer_free(ggml_backend_buffer_t buffer);
void *                     ggml_backend_buffer_get_base(ggml_backend_buffer_t buffer);
size_t                     ggml_backend_buffer_get_size(ggml_backend_buffer_t buffer);
void                       ggml_backend_buffer_clear(ggml_backend_buffer_t buffer, uint8_t value);
bool                       ggml_backend_buffer_is_host(ggml_backend_buffer_t buffer);
void                       ggml_backend_buffer_set_usage(ggml_backend_buffer_t buffer, enum ggml_backend_buffer_usage usage);
ggml_backend_buffer_type_t ggml_backend_buffer_get_type(ggml_backend_buffer_t buffer);
enum ggml_status           ggml_backend_buffer_init_tensor(ggml_backend_buffer_t buffer, struct ggml_tensor * tensor);

const char * ggml_backend_name(ggml_backend_t backend);
void         ggml_backend_free(ggml_backend_t backend);
void         ggml_backend_synchronize(ggml_backend_t backend);
void         ggml_backend_tensor_set_async(ggml_backend_t backend, struct ggml_tensor * tensor, const void * data, size_t offset, size_t size);
void         ggml_backend_tensor_set(struct ggml_tensor * tensor, const void * data, size_t offset, size_t size);
void         ggml_backend_tensor_get(const struct ggml_tensor * tensor, void * data, size_t offset, size_t size);
ggml_backend_dev_t ggml_backend_get_device(ggml_backend_t backend);

ggml_backend_event_t ggml_backend_event_new(ggml_backend_dev_t device);
void                 ggml_backend_event_free(ggml_backend_event_t event);
void                 ggml_backend_event_record(ggml_backend_event_t event, ggml_backend_t backend);
void                 ggml_backend_event_synchronize(ggml_backend_event_t event);
void                 ggml_backend_event_wait(ggml_backend_t backend, ggml_backend_event_t event);

const char *               ggml_backend_dev_name(ggml_backend_dev_t device);
const char *               ggml_backend_dev_description(ggml_backend_dev_t device);
void                       ggml_backend_dev_memory(ggml_backend_dev_t device, size_t * free, size_t * total);
enum ggml_backend_dev_type ggml_backend_dev_type(ggml_backend_dev_t device);
ggml_backend_t             ggml_backend_dev_init(ggml_backend_dev_t device, const char * params);
ggml_backend_buffer_type_t ggml_backend_dev_buffer_type(ggml_backend_dev_t device);
ggml_backend_buffer_type_t ggml_backend_dev_host_buffer_type(ggml_backend_dev_t device);
ggml_backend_reg_t         ggml_backend_dev_backend_reg(ggml_backend_dev_t device);
const char *               ggml_backend_reg_name(ggml_backend_reg_t reg);
size_t                     ggml_backend_dev_count(void);
ggml_backend_dev_t         ggml_backend_dev_get(size_t index);
ggml_backend_dev_t         ggml_backend_dev_by_type(enum ggml_backend_dev_type type);
void                       ggml_backend_load_all(void);

ggml_backend_buffer_t      ggml_backend_cpu_buffer_from_ptr(void * ptr, size_t size);
ggml_backend_buffer_type_t ggml_backend_cpu_buffer_type(void);
