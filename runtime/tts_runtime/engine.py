"""The onnxruntime engine: loads a Piper voice and runs padded batches of phoneme ids."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import onnxruntime as ort

from tts_runtime import heap
from tts_runtime.engine_types import Audio, MemoryMode, SynthesisItem, SynthesisScales
from tts_runtime.errors import ModelLoadError
from tts_runtime.fp16 import convert_model_to_fp16
from tts_runtime.graph import DurationsNotFoundError, expose_durations
from tts_runtime.voice import VoiceConfig, load_voice_config, resolve_model_files

log = logging.getLogger(__name__)

Precision = Literal["fp16", "fp32"]
Device = Literal["auto", "cuda", "cpu"]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Piper's choice: exhaustive cuDNN search re-tunes for every new input length.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}
REQUIRED_INPUTS = ("input", "input_lengths", "scales")


@dataclass(frozen=True)
class _ExecutionPlan:
    """Where the model runs: execution provider, precision, and why it fell back if so."""

    provider: str
    precision: Precision
    fallback_reason: str | None


class OnnxEngine:
    """One onnxruntime session for one voice; called from a single worker thread."""

    def __init__(
        self,
        session: ort.InferenceSession,
        config: VoiceConfig,
        *,
        model_name: str,
        durations_output: str,
        precision: Precision,
        fallback_reason: str | None,
        num_parameters: int,
        run_options: ort.RunOptions | None = None,
        after_run: Callable[[], object] | None = None,
    ) -> None:
        self._session = session
        self.config = config
        self.model_name = model_name
        self.fallback_reason = fallback_reason
        self.num_parameters = num_parameters
        self._durations_output = durations_output
        self._precision = precision
        self._provider: str = session.get_providers()[0]
        self._uses_sid = any(i.name == "sid" for i in session.get_inputs())
        self._run_options = run_options
        self._after_run = after_run

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def precision(self) -> str:
        return self._precision

    @classmethod
    def load(
        cls,
        model_path: Path,
        precision: Precision,
        device: Device = "auto",
        memory: MemoryMode = "shrink",
    ) -> OnnxEngine:
        """Load a Piper voice; ModelLoadError names the file and the problem."""
        model_file, config_file = resolve_model_files(model_path)
        config = load_voice_config(config_file)
        plan = _plan_execution(precision, device, model_file)
        model = _read_model(model_file, plan)
        if plan.precision == "fp16" and model is None:
            model = _convert_in_memory(model_file)
        assert model is not None
        try:
            durations = expose_durations(model)
        except DurationsNotFoundError as error:
            raise ModelLoadError(model_file, str(error)) from error
        _check_contract(model, config, model_file)
        if memory == "shrink":
            heap.keep_large_blocks_out_of_the_heap()  # before the session's threads start
        session = _open_session(model, plan, model_file, memory)
        if plan.fallback_reason:
            log.warning("%s (model %s)", plan.fallback_reason, model_file)
        name = model_path.name if model_path.is_dir() else model_file.name.removesuffix(".onnx")
        engine = cls(
            session,
            config,
            model_name=name,
            durations_output=durations,
            precision=plan.precision,
            fallback_reason=plan.fallback_reason,
            num_parameters=sum(int(np.prod(t.dims)) for t in model.graph.initializer),
            run_options=_run_options(memory, plan.provider),
            after_run=heap.trim if memory == "shrink" else None,
        )
        log.info(
            "loaded %s: %d parameters, %s on %s",
            model_file,
            engine.num_parameters,
            plan.precision,
            engine.provider,
        )
        return engine

    def synthesize(self, items: Sequence[SynthesisItem], scales: SynthesisScales) -> list[Audio]:
        """Run one padded batch; each item's audio is trimmed to sum(durations) x hop."""
        if not items:
            return []
        for item in items:
            self._check_item(item)
        lengths = np.array([len(item.phoneme_ids) for item in items], dtype=np.int64)
        ids = np.zeros((len(items), int(lengths.max())), dtype=np.int64)
        for row, item in enumerate(items):
            ids[row, : len(item.phoneme_ids)] = item.phoneme_ids
        feeds: dict[str, Any] = {
            "input": ids,
            "input_lengths": lengths,
            "scales": np.array(
                [scales.noise_scale, scales.length_scale, scales.noise_w], dtype=np.float32
            ),
        }
        if self._uses_sid:
            feeds["sid"] = np.array([item.speaker_id for item in items], dtype=np.int64)
        audio, durations = self._session.run(
            ["output", self._durations_output], feeds, self._run_options
        )
        if self._after_run is not None:
            self._after_run()
        audio = np.asarray(audio, dtype=np.float32).reshape(len(items), -1)
        frames = np.rint(np.asarray(durations, dtype=np.float64).reshape(len(items), -1).sum(1))
        hop = self.config.hop_length
        return [
            audio[row, : min(int(n) * hop, audio.shape[1])].copy() for row, n in enumerate(frames)
        ]

    def _check_item(self, item: SynthesisItem) -> None:
        if not item.phoneme_ids:
            raise ValueError("an item has no phoneme ids")
        limit = self.config.num_symbols
        if limit is not None and not all(0 <= i < limit for i in item.phoneme_ids):
            raise ValueError(f"phoneme ids must lie in 0..{limit - 1}")
        if not 0 <= item.speaker_id < self.config.num_speakers:
            raise ValueError(
                f"speaker id {item.speaker_id} is outside 0..{self.config.num_speakers - 1}"
            )


def _plan_execution(precision: Precision, device: Device, model_file: Path) -> _ExecutionPlan:
    if device == "cpu":
        reason = "device cpu: running fp32 on CPU" if precision == "fp16" else None
        return _ExecutionPlan(CPU, "fp32", reason)
    problem = cuda_problem()
    if problem is None:
        return _ExecutionPlan(CUDA, precision, None)
    if device == "cuda":
        raise ModelLoadError(model_file, f"device cuda requested but {problem}")
    return _ExecutionPlan(CPU, "fp32", f"{problem}: running fp32 on CPU")


@functools.cache
def cuda_problem() -> str | None:
    """Why the CUDA execution provider cannot run here, or None when it can.

    onnxruntime-gpu lists CUDA even where its libraries (CUDA 13, cuDNN 9) are missing and
    then silently falls back to CPU, so open a one-node session to find out for sure."""
    if CUDA not in ort.get_available_providers():
        return "CUDA execution provider unavailable"
    probe = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "cuda_probe",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        ),
        opset_imports=[onnx.helper.make_opsetid("", 13)],
    )
    probe.ir_version = 8
    try:
        session = ort.InferenceSession(
            probe.SerializeToString(), providers=[(CUDA, CUDA_OPTIONS), CPU]
        )
    except Exception as error:
        return f"CUDA execution provider failed to start ({error})"
    if session.get_providers()[0] != CUDA:
        return "CUDA execution provider unavailable (CUDA 13 / cuDNN 9 libraries not loadable)"
    return None


def fp16_path(model_file: Path) -> Path:
    """Where a pre-converted fp16 model sits beside the fp32 one (model.fp16.onnx)."""
    return model_file.with_name(model_file.name.removesuffix(".onnx") + ".fp16.onnx")


def _read_model(model_file: Path, plan: _ExecutionPlan) -> onnx.ModelProto | None:
    """The model to run: fp32 file, or a pre-converted fp16 file; None = convert in memory."""
    path = model_file
    if plan.precision == "fp16":
        if not fp16_path(model_file).is_file():
            return None
        path = fp16_path(model_file)
    try:
        return onnx.load(str(path))
    except Exception as error:  # protobuf DecodeError, OSError, onnx errors
        raise ModelLoadError(path, f"not a readable ONNX model: {error}") from error


def _convert_in_memory(model_file: Path) -> onnx.ModelProto:
    # The pod's root filesystem is read-only, so the fp16 model never touches disk.
    fp32 = _read_model(model_file, _ExecutionPlan(CPU, "fp32", None))
    assert fp32 is not None
    log.info("converting %s to fp16 in memory (no %s)", model_file, fp16_path(model_file).name)
    try:
        return convert_model_to_fp16(fp32)
    except Exception as error:
        raise ModelLoadError(model_file, f"fp16 conversion failed: {error}") from error


def _check_contract(model: onnx.ModelProto, config: VoiceConfig, model_file: Path) -> None:
    inputs = {i.name for i in model.graph.input} - {t.name for t in model.graph.initializer}
    missing = [name for name in REQUIRED_INPUTS if name not in inputs]
    if missing:
        raise ModelLoadError(model_file, f"model lacks the Piper inputs {missing}")
    if "output" not in {o.name for o in model.graph.output}:
        raise ModelLoadError(model_file, "model has no output named 'output'")
    has_sid = "sid" in inputs
    if has_sid and config.num_speakers <= 1:
        raise ModelLoadError(
            model_file, "model takes a speaker id (sid) but the voice config says num_speakers 1"
        )
    if not has_sid and config.num_speakers > 1:
        raise ModelLoadError(
            model_file,
            f"voice config says num_speakers {config.num_speakers} but the model has no sid input",
        )


def session_options(memory: MemoryMode) -> ort.SessionOptions:
    """Session options for variable-length input. Every request brings new shapes, so a
    memory pattern planned for one shape is rarely reused and only adds to what is kept;
    with the arena's default growth (powers of two, never returned) a pod's RSS climbs to
    the largest batch it ever ran and past it (measured in docs/benchmarks.md)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's own warnings are not actionable here
    if memory != "grow":
        options.enable_mem_pattern = False
    if memory == "no-arena":
        options.enable_cpu_mem_arena = False
    return options


def _run_options(memory: MemoryMode, provider: str) -> ort.RunOptions | None:
    """For "shrink": after each run, free the arena chunks that run added (the arena's
    first chunk stays, so a steady load does not pay for allocation every time); the
    engine then trims glibc's heaps too (tts_runtime.heap)."""
    if memory != "shrink":
        return None
    run_options = ort.RunOptions()
    arenas = "cpu:0;gpu:0" if provider == CUDA else "cpu:0"
    run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
    return run_options


def _open_session(
    model: onnx.ModelProto, plan: _ExecutionPlan, model_file: Path, memory: MemoryMode
) -> ort.InferenceSession:
    options = session_options(memory)
    providers: list[Any] = [(CUDA, CUDA_OPTIONS), CPU] if plan.provider == CUDA else [CPU]
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as error:  # onnxruntime raises its own pybind exception types
        raise ModelLoadError(model_file, f"onnxruntime cannot load the model: {error}") from error
