/* Curated subset of gguf.h: metadata contexts for llama_model_init_from_user and tensor offsets. */
struct gguf_context;
struct gguf_init_params {
    bool no_alloc;
    struct ggml_context ** ctx;
};
struct gguf_context * gguf_init_from_file(const char * fname, struct gguf_init_params params);
void          gguf_free(struct gguf_context * ctx);
int64_t       gguf_get_n_tensors(const struct gguf_context * ctx);
int64_t       gguf_find_tensor(const struct gguf_context * ctx, const char * name);
size_t        gguf_get_tensor_offset(const struct gguf_context * ctx, int64_t tensor_id);
const char *  gguf_get_tensor_name(const struct gguf_context * ctx, int64_t tensor_id);
enum ggml_type gguf_get_tensor_type(const struct gguf_context * ctx, int64_t tensor_id);
size_t        gguf_get_tensor_size(const struct gguf_context * ctx, int64_t tensor_id);
size_t        gguf_get_data_offset(const struct gguf_context * ctx);
int64_t       gguf_get_n_kv(const struct gguf_context * ctx);
int64_t       gguf_find_key(const struct gguf_context * ctx, const char * key);
const char *  gguf_get_key(const struct gguf_context * ctx, int64_t key_id);
void          gguf_add_tensor(struct gguf_context * ctx, const struct ggml_tensor * tensor);
