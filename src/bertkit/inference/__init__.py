"""Using a trained model: `pipelines` (`bertkit.pipeline`, fill-mask, evaluation and prediction
over files) and `export` (an ONNX file checked against PyTorch). May import `tasks` and every
floor below; not `training` (its neighbour), `serve` or `cli`."""
