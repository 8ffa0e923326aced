#!/usr/bin/env bash
# The main job on the embedded procedural voice-face corpus, end to end on 2 CPU cores:
#   1. generate the corpus and prepare it into training records     runs/demo/data
#   2. train the face-identity network (perceptual loss, evaluation) runs/demo/face_net
#   3. stage 1: voice encoder + face decoder GAN                     runs/demo/stage1
#   4. stage 2: the attention fuser, everything else frozen          runs/demo/stage2
#   5. evaluate on held-out identities                                runs/demo/report
#   6. export the fused voice-to-face SavedModel for TF-Serving       runs/demo/export
# Every stage resumes or skips what is already done, so re-running after an interruption
# continues. Extra arguments are passed to stage 1 (e.g. --train_steps=100). SEED=<n> sets
# both training stages' --seed (model initialisation and data order; default 0); RUN_DIR=<dir>
# moves the whole run (default runs/demo). benchmarks/demo_seeds.py uses both.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh requirements.txt
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
RUN=${RUN_DIR:-runs/demo}
SEED=${SEED:-0}
PY=.venv/bin/python
CFG=configs/demo.cfg
start=$(date +%s)
stamp() { echo "[main job $(( ($(date +%s) - start) / 60 ))m$(( ($(date +%s) - start) % 60 ))s] $*"; }

stamp "1/6 corpus -> $RUN/data"
if [ ! -f "$RUN/data/dataset.json" ]; then
  $PY trainers/prepare_data.py --flagfile=$CFG --data_dir="$RUN/data"
fi

stamp "2/6 face-identity network -> $RUN/face_net"
if [ ! -f "$RUN/face_net/face_identity.json" ]; then
  $PY trainers/train_face_identity.py --flagfile=$CFG --data_dir="$RUN/data" \
    --output_dir="$RUN/face_net"
fi

stamp "3/6 stage 1 -> $RUN/stage1"
$PY trainers/train.py --flagfile=$CFG --data_dir="$RUN/data" --model_dir="$RUN/stage1" \
  --face_network="$RUN/face_net" --seed="$SEED" "$@"

stamp "4/6 stage 2 (fuser) -> $RUN/stage2"
$PY trainers/train.py --flagfile=$CFG --flagfile=configs/demo_fuser.cfg --data_dir="$RUN/data" \
  --model_dir="$RUN/stage2" --init_checkpoint="$RUN/stage1" --face_network="$RUN/face_net" \
  --seed="$SEED"

stamp "5/6 evaluation -> $RUN/report"
$PY trainers/evaluate.py --flagfile=$CFG --flagfile=configs/demo_fuser.cfg \
  --data_dir="$RUN/data" --checkpoint_dir="$RUN/stage2" --face_network="$RUN/face_net" \
  --report_dir="$RUN/report"

stamp "6/6 export -> $RUN/export/sf2f_demo"
if [ -z "$(ls -A "$RUN/export/sf2f_demo" 2>/dev/null)" ]; then
  $PY export/export_savedmodel.py --checkpoint_dir="$RUN/stage2" \
    --export_dir="$RUN/export/sf2f_demo"
fi

stamp "done"
cat <<DONE
TensorBoard:   .venv/bin/tensorboard --logdir $RUN --host 127.0.0.1
Results page:  $RUN/report/index.html  (open in a browser: photos, the speech as audio, the faces)
Face grid:     $RUN/report/faces.png
Metrics:       $RUN/report/report.md  ($RUN/report/metrics.json)
SavedModel:    $RUN/export/sf2f_demo/  (serve: .venv/bin/python export/serve.py --model_base_path=$RUN/export/sf2f_demo --model_name=sf2f_demo)
Try your voice: serve as above, then open http://127.0.0.1:8501/ (microphone or audio file)
DONE
