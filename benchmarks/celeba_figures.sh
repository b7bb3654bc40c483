#!/usr/bin/env bash
# Reproduce the celeba-299 figures of the README: train MobileNetV2 (ImageNet start), ResNet50 and VGG16 (from
# scratch, smaller inputs), convert each to four precisions, evaluate before/after quantization on the held-out
# test split, measure latency and write the report. Hours of CPU on 2 cores; every step is the public CLI.
#
#   benchmarks/celeba_figures.sh [STEP...]
#       steps: split mobilenetv2 mobilenetv2-cosface mobilenetv2-teacher mobilenetv2-teacher-cosface
#              mobilenetv2-teacher-centres mobilenetv2-teacher-mirror
#              mobilenetv2-teacher-long mobilenetv2-teacher-long-mirror
#              mobilenetv2-teacher-long-fallback mobilenetv2-teacher-long-fallback-centres
#              mobilenetv2-teacher-long-fallback-mirror mobilenetv2-teacher-long-fallback-mirror-refit
#              mobilenetv2-teacher-long-fallback-mirror-refit-whiten
#              mobilenetv2-teacher-long-fallback-emotion2
#              mobilenetv2-teacher-long-fallback-emotion2-mirror resnet50 vgg16
#              convert evaluate bench report
#
# Needs ../shared (or $EDGEFACE_SHARED) and, for MobileNetV2, ImageNet weights ($EDGEFACE_WEIGHTS_DIR).
# Outputs (never committed: they derive from CelebA): splits/celeba, runs/celeba-*, bundles/celeba, reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${EDGEFACE_SHARED:-$(cd .. && pwd)/shared}
export EDGEFACE_WEIGHTS_DIR=${EDGEFACE_WEIGHTS_DIR:-$SHARED/weights}
EDGEFACE=${EDGEFACE:-.venv/bin/edgeface}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(split mobilenetv2 mobilenetv2-cosface resnet50 vgg16 convert evaluate bench report)
# MODELS="mobilenetv2" limits convert and evaluate to some models.
read -r -a models <<< "${MODELS:-mobilenetv2 mobilenetv2-cosface resnet50 vgg16}"

for step in "${steps[@]}"; do
  echo "== $step" >&2
  case $step in
  split)        # 70/30 per person, seed 0
    "$EDGEFACE" data split "$SHARED/data/celeba-299/labels.csv" --out splits/celeba --fraction 0.3 --seed 0 ;;
  mobilenetv2)  # heads on frozen ImageNet features, then fine-tuning from block 6 with a cosine-decayed rate
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2 --backbone mobilenetv2 \
      --weights imagenet --input-size 224 --epochs 30 --patience 6 --fine-tune-learning-rate 1e-4 \
      --val-fraction 0.07 ;;
  mobilenetv2-cosface)  # the same, with the metric-learning identity head (CosFace, margin 0.2)
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2-cosface --backbone mobilenetv2 \
      --weights imagenet --input-size 224 --epochs 30 --patience 6 --fine-tune-learning-rate 1e-4 \
      --val-fraction 0.07 --identity-head cosface ;;
  mobilenetv2-teacher)  # the same, distilling identity from dlib's face encoder (needs edgeface[teacher])
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2-teacher --backbone mobilenetv2 \
      --weights imagenet --input-size 224 --epochs 30 --patience 6 --fine-tune-learning-rate 1e-4 \
      --val-fraction 0.07 --teacher dlib ;;
  mobilenetv2-teacher-cosface)  # both levers: the teacher and the CosFace identity head
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2-teacher-cosface \
      --backbone mobilenetv2 --weights imagenet --input-size 224 --epochs 30 --patience 6 \
      --fine-tune-learning-rate 1e-4 --val-fraction 0.07 --teacher dlib --identity-head cosface ;;
  mobilenetv2-teacher-centres)  # the distilled model, identity by nearest person centre (minutes, no training)
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-centres ;;
  mobilenetv2-teacher-mirror)  # the same, each face read with its mirror image (twice the work per face)
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-mirror --mirror ;;
  mobilenetv2-teacher-long)  # the distilled recipe with 45 fine-tuning epochs instead of 30 (the cosine decay
    # reached zero while validation identity still rose)
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2-teacher-long \
      --backbone mobilenetv2 --weights imagenet --input-size 224 --epochs 45 --patience 8 \
      --fine-tune-learning-rate 1e-4 --val-fraction 0.07 --teacher dlib ;;
  mobilenetv2-teacher-long-mirror)  # that model, nearest-centre identity, each face read with its mirror image
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher-long --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-long-mirror --mirror ;;
  mobilenetv2-teacher-long-fallback)  # the 45-epoch recipe on crops from blazeface-fallback (faces short range
    # misses, found by full range: 2 training photos without a face instead of 44)
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2-teacher-long-fallback \
      --backbone mobilenetv2 --weights imagenet --input-size 224 --epochs 45 --patience 8 \
      --fine-tune-learning-rate 1e-4 --val-fraction 0.07 --teacher dlib --detector blazeface-fallback ;;
  mobilenetv2-teacher-long-fallback-centres)
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher-long-fallback --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-long-fallback-centres ;;
  mobilenetv2-teacher-long-fallback-mirror)
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher-long-fallback --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-long-fallback-mirror --mirror ;;
  mobilenetv2-teacher-long-fallback-mirror-refit)  # and the emotion and gender heads refitted on mirrored features
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher-long-fallback --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-long-fallback-mirror-refit --mirror --refit-heads ;;
  mobilenetv2-teacher-long-fallback-mirror-refit-whiten)  # and the identity cosine taken after WCCN
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher-long-fallback --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-long-fallback-mirror-refit-whiten --mirror --refit-heads --whiten ;;
  mobilenetv2-teacher-long-fallback-emotion2)  # that recipe with the emotion head's loss weighed twice: emotion's
    # cross-entropy is small beside identity's and the teacher's, so the shared backbone learned little of smiles
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2-teacher-long-fallback-emotion2 \
      --backbone mobilenetv2 --weights imagenet --input-size 224 --epochs 45 --patience 8 \
      --fine-tune-learning-rate 1e-4 --val-fraction 0.07 --teacher dlib --detector blazeface-fallback \
      --head-weight emotion=2 ;;
  mobilenetv2-teacher-long-fallback-emotion2-mirror)
    "$EDGEFACE" recentre runs/celeba-mobilenetv2-teacher-long-fallback-emotion2 --data splits/celeba/train.csv \
      --out runs/celeba-mobilenetv2-teacher-long-fallback-emotion2-mirror --mirror ;;
  resnet50)     # no ImageNet weights on this machine: from scratch at 112x112
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-resnet50 --backbone resnet50 \
      --weights none --input-size 112 --epochs 8 --patience 4 --val-fraction 0.07 ;;
  vgg16)        # from scratch at 64x64 (VGG16 has no BatchNorm: a lower rate keeps it from diverging)
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-vgg16 --backbone vgg16 \
      --weights none --input-size 64 --epochs 8 --patience 4 --learning-rate 1e-4 --val-fraction 0.07 ;;
  convert)      # all four precisions; --min-agreement 0 keeps every bundle for the table (the gate is evaluate's)
    for m in "${models[@]}"; do
      "$EDGEFACE" convert "runs/celeba-$m" --precision all --out bundles/celeba --min-agreement 0 \
        --verify-data splits/celeba/test.csv
    done ;;
  evaluate)     # Keras vs each precision on the same test crops; --max-drop 1 is the int8 gate
    mkdir -p reports
    for m in "${models[@]}"; do
      "$EDGEFACE" evaluate "runs/celeba-$m" bundles/celeba/celeba-"$m"-{float32,float16,dynamic,int8}.edgeface \
        --data splits/celeba/test.csv --json "reports/eval-$m.json" --max-drop 1 || true
    done ;;
  bench)        # per-face latency, all bundles side by side (round-robin), 1 and 2 threads
    "$EDGEFACE" bench bundles/celeba/*.edgeface --threads 1 --threads 2 --runs 200 --json reports/bench.json ;;
  report)
    "$EDGEFACE" report reports/eval-*.json reports/bench.json --out reports/celeba-299 ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
