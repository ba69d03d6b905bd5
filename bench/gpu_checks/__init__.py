"""The checks that bench/gpu_check.py runs, one module per kind.

common       data paths, sizes, the context, results, running a bertkit CLI step with a timeout
data         reading the inputs, and `--prepare`
environment  env
parity       tokenizer, parity
training     init, finetune_classify, finetune_ner, pretrain, torchrun
serving      embed, serve
speed        speed_inference, speed_training
"""
