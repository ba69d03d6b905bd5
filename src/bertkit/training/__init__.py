"""Training runs: the loop (`loop.fit`: AdamW, schedule, autocast, accumulation, evaluation and
early stopping), the optimiser, checkpoints and exact resume (`resume`), and the commands built
on them: `finetune`, `distill`, `pretrain` and `search` (grid search with k-fold). May import
`tasks` and every floor below; not `inference` (its neighbour), `serve` or `cli`."""
