"""Model providers: OpenAI-compatible chat completions and the offline deterministic one."""
