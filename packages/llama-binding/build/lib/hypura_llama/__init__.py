"""cffi binding to the vendored llama.cpp/ggml: models, contexts, samplers, backends, the eval-callback filter."""
