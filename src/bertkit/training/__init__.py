"""Training runs: the loop (`loop.fit`: AdamW, schedule, autocast, accumulation, evaluation and
early stopping), the optimiser, checkpoint files and trainer state (`resume`), the run skeleton
the commands share (`run`: batches per rank, resume, checkpoints, the DDP/FSDP wrap, staging),
and the commands built on them: `finetune`, `distill` (with `distill_losses`, `distill_student`,
`distill_teacher`), `pretrain` (with `masked_lm`) and `search` (grid search with k-fold). May import
`tasks` and every floor below; not `inference` (its neighbour), `serve` or `cli`."""
