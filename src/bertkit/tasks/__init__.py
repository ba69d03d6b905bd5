"""What a task is, asked through one registry (`registry`): reading its files, features, loss,
decoding, metrics and saved settings for classification (single-label, multi-label, regression,
pairs), NER (softmax, CRF, BiLSTM-CRF) and QA; class weights; a fine-tuned task's model on the
chosen backend (`engine`), its inputs from files (`inputs`) and the task settings users give
(`options`; each task adds its own flag group). No module outside this package
compares task names. May import `engine`, `models`, `data`, `evaluation`, `tokenization` and
the ground floor."""
