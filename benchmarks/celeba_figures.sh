#!/usr/bin/env bash
# Reproduce the celeba-299 figures of docs/results.md: train dlib-resnet (the default) and MobileNetV2
# (ImageNet start) on the same split, ResNet50 and VGG16 from scratch (no ImageNet weights on these machines),
# convert each to four precisions, evaluate before/after quantization on the held-out test split, measure
# latency, write the report, and run the open-set protocol (enrolled people and strangers, docs/identity.md)
# for edgeface and for dlib's own pipeline. Hours of CPU on 2 cores; every step is the public CLI.
#
#   benchmarks/celeba_figures.sh [STEP...]
#       steps: split dlib-resnet mobilenetv2 resnet50 vgg16 convert evaluate probe bench report
#              openset-split openset-dlib-resnet openset-dlib-resnet-all openset-mobilenetv2 openset household
#
# Needs ../shared (or $EDGEFACE_SHARED), and for MobileNetV2 its ImageNet weights ($EDGEFACE_WEIGHTS_DIR).
# The figures go to results/*.json (aggregate figures, committed; `make results` renders docs/results.md
# from them). Other outputs are never committed (they derive from CelebA): splits/, runs/, bundles/, reports/.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${EDGEFACE_SHARED:-$(cd .. && pwd)/shared}
export EDGEFACE_WEIGHTS_DIR=${EDGEFACE_WEIGHTS_DIR:-$SHARED/weights}
EDGEFACE=${EDGEFACE:-.venv/bin/edgeface}
PYTHON=${PYTHON:-.venv/bin/python}
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(split dlib-resnet mobilenetv2 resnet50 vgg16 convert evaluate probe bench report \
                                 openset-split openset-dlib-resnet openset-dlib-resnet-all openset-mobilenetv2 openset \
                                 household)
# MODELS="dlib-resnet" limits convert and evaluate to some models.
read -r -a models <<< "${MODELS:-dlib-resnet mobilenetv2 resnet50 vgg16}"
# Photo collections: blazeface-fallback also finds the small faces short range misses.
DETECTOR=(--detector blazeface-fallback)

for step in "${steps[@]}"; do
  echo "== $step" >&2
  case $step in
  split)        # 70/30 per person, seed 0
    "$EDGEFACE" data split "$SHARED/data/celeba-299/labels.csv" --out splits/celeba --fraction 0.3 --seed 0 ;;
  dlib-resnet)  # the default recipe: dlib's frozen encoder for identity, its attribute branch fine-tuned
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-dlib-resnet --val-fraction 0.07 \
      "${DETECTOR[@]}" ;;
  mobilenetv2)  # 224x224, heads on frozen ImageNet features, then fine-tuning from block 6 (train's defaults)
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-mobilenetv2 --backbone mobilenetv2 \
      --val-fraction 0.07 "${DETECTOR[@]}" ;;
  resnet50)     # no ImageNet weights on this machine: from scratch at 112x112
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-resnet50 --backbone resnet50 \
      --weights none --input-size 112 --epochs 8 --patience 4 --val-fraction 0.07 "${DETECTOR[@]}" ;;
  vgg16)        # from scratch at 64x64 (VGG16 has no BatchNorm: a lower rate keeps it from diverging)
    "$EDGEFACE" train --data splits/celeba/train.csv --out runs/celeba-vgg16 --backbone vgg16 \
      --weights none --input-size 64 --epochs 8 --patience 4 --learning-rate 1e-4 --val-fraction 0.07 \
      "${DETECTOR[@]}" ;;
  convert)      # all four precisions; --min-agreement 0 keeps every bundle for the table (the gate is evaluate's).
                # Verified on the model's own validation photos: convert chooses the identity rule on them, and
                # the test photos must stay unseen until evaluate.
    for m in "${models[@]}"; do
      "$EDGEFACE" convert "runs/celeba-$m" --precision all --out bundles/celeba --min-agreement 0
    done ;;
  evaluate)     # Keras vs each precision on the same test crops; --max-drop 0.5 is the int8 gate
    mkdir -p reports
    for m in "${models[@]}"; do
      "$EDGEFACE" evaluate "runs/celeba-$m" bundles/celeba/celeba-"$m"-{float32,float16,dynamic,int8}.edgeface \
        --data splits/celeba/test.csv --json "reports/eval-$m.json" --max-drop 0.5 || true
      "$PYTHON" benchmarks/results.py evaluation "celeba-heads-$m" "reports/eval-$m.json" \
        --training "runs/celeba-$m/metadata.json" \
        --command "MODELS=$m benchmarks/celeba_figures.sh split $m convert evaluate"
    done ;;
  probe)        # each head of dlib-resnet against its linear probe on the test photos, Keras and int8
    "$PYTHON" benchmarks/household_sets.py --run runs/celeba-dlib-resnet \
      --bundle bundles/celeba/celeba-dlib-resnet-int8.edgeface --test splits/celeba/test.csv \
      --name celeba-probe ;;
  bench)        # per-face latency, dlib-resnet against MobileNetV2, int8 and float32 side by side (round-robin)
    "$EDGEFACE" bench bundles/celeba/celeba-{dlib-resnet,mobilenetv2}-int8.edgeface \
      bundles/celeba/celeba-{dlib-resnet,mobilenetv2}-float32.edgeface --threads 2 --runs 300 --json reports/bench.json
    "$PYTHON" benchmarks/results.py bench celeba-latency reports/bench.json \
      --command "benchmarks/celeba_figures.sh split dlib-resnet mobilenetv2 convert bench" ;;
  report)
    "$EDGEFACE" report reports/eval-*.json reports/bench.json --out reports/celeba-299 ;;
  openset-split)  # 199 people trained; of the other 100, 50 enrolled from 5 photos and 50 strangers
    "$PYTHON" benchmarks/openset_celeba.py --write-train-csv splits/openset/train.csv ;;
  openset-dlib-resnet)
    "$EDGEFACE" train --data splits/openset/train.csv --out runs/openset-dlib-resnet --val-fraction 0.07 \
      "${DETECTOR[@]}"
    "$EDGEFACE" convert runs/openset-dlib-resnet --precision int8 --out bundles/openset --min-agreement 0 ;;
  openset-dlib-resnet-all)  # does fine-tuning the identity path help? (docs/results.md, "What the recipe keeps")
    "$EDGEFACE" train --data splits/openset/train.csv --out runs/openset-dlib-resnet-all --val-fraction 0.07 \
      --fine-tune-from all --epochs 4 --patience 2 "${DETECTOR[@]}"
    "$EDGEFACE" convert runs/openset-dlib-resnet-all --precision int8 --out bundles/openset
    "$PYTHON" benchmarks/openset_celeba.py --bundle bundles/openset/openset-dlib-resnet-all-int8.edgeface \
      --out reports/openset-dlib-resnet-all --no-dlib --results openset-dlib-resnet-all ;;
  openset-mobilenetv2)
    "$EDGEFACE" train --data splits/openset/train.csv --out runs/openset-mobilenetv2 --backbone mobilenetv2 \
      --val-fraction 0.07 "${DETECTOR[@]}"
    "$EDGEFACE" convert runs/openset-mobilenetv2 --precision int8 --out bundles/openset --min-agreement 0 ;;
  openset)      # enrolled people named and strangers refused, edgeface's int8 bundles beside face_recognition
    # (pip install --no-deps face_recognition); emotion and gender of the 100 people no model trained on
    "$PYTHON" benchmarks/openset_celeba.py --bundle bundles/openset/openset-dlib-resnet-int8.edgeface \
      --out reports/openset-dlib-resnet --results openset-dlib-resnet
    "$PYTHON" benchmarks/openset_celeba.py --bundle bundles/openset/openset-mobilenetv2-int8.edgeface \
      --out reports/openset-mobilenetv2 --no-dlib --results openset-mobilenetv2 ;;
  household)    # small households drawn from celeba-299 (5, 10, 20 people x 3 seeds): train, int8, probe
    "$PYTHON" benchmarks/household_sets.py ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
