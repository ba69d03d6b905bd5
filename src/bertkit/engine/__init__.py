"""Running an encoder fast: `runner` (InferenceOptions, prepare: device, precision, prepacked and
fused layers, int8; token-budget batches), `fused` and `int8` (the CPU layers), `graph` (the
traced three-tensor graph), the ONNX Runtime and OpenVINO runners, `backend` (which engine
`auto` picks per CPU kind) and `embeddings` (sentence embeddings, pooling). Knows no task:
may import `models`, `data`, `tokenization` and the ground floor."""
