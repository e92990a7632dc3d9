"""How the UNet runs: torch (fp32 or bf16 autocast), ONNX Runtime or OpenVINO, chosen at load time.

:func:`with_backend` wraps a :class:`~lpipdiff.model.unet.PatchFusionUNet` into :class:`BackendUNet`, a module
the pipeline calls exactly like the UNet (``unet(noisy, timestep, degraded, coordinates, context)``,
``unet.config``, ``encode``/``decode``); only the forward pass changes. ``"auto"`` picks the fastest
path the machine supports (docs/BENCHMARKS.md): a GPU keeps torch; a CPU with native bf16
(AVX512-BF16 or AMX) runs OpenVINO in bf16 when it is installed, else torch with bf16 autocast; a CPU
without it runs ONNX Runtime in fp32 when installed, else torch fp32. bf16 is never chosen on a CPU
without native bf16, where it is many times slower than fp32.

The ONNX graph is the model folder's ``unet/model.onnx`` when there is one (``lpipdiff export
--onnx``), else exported from the loaded UNet once into ``cache_dir``, named by a hash of the
weights. An ONNX file is data (no code runs when it is read), like safetensors. Every exported graph
records that hash in its metadata (``lpipdiff_weights``), checked when it is loaded: a model
folder's graph made from other weights, or not a readable graph, is refused (it would restore with
another model than the one named); a cached graph that does not match, or is damaged, is exported
again. A folder graph without the record (an older export) is not used; the graph is exported from
the weights instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import threading
from pathlib import Path

import torch

from ..config.defaults import BACKEND_NAMES
from ..io.images import SPECIAL_FILE, special_file

ONNX_FILE = "model.onnx"  # in the model folder's unet/ subfolder
ONNX_INPUTS = ("noisy", "timestep", "degraded", "coordinates", "context")
ONNX_OPSET = 17
DEFAULT_CACHE = Path.home() / ".cache" / "lpipdiff" / "onnx"  # graphs exported on the fly, per user
EXPORTING = threading.Lock()
WEIGHTS_KEY = "lpipdiff_weights"  # an exported graph's metadata: weights_hash() of the UNet it was made from


class GraphError(ValueError):
    """An ONNX graph that cannot be used for this UNet (not readable, or made from other weights)."""


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16); read from /proc/cpuinfo on
    Linux, False elsewhere (then fp32 is used, never an emulated bf16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def choose_backend(backend: str, device: torch.device | str) -> str:
    """The backend ``"auto"`` stands for on this machine and ``device``; other names are checked and
    returned. A GPU always runs torch."""
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {backend!r}")
    cpu = torch.device(device).type == "cpu"
    if backend != "auto":
        if backend != "torch" and not cpu:
            raise ValueError(f"backend {backend!r} runs on the CPU only; pass device='cpu' or backend='torch'")
        if backend == "torch-bf16" and not native_bf16():
            raise ValueError("backend 'torch-bf16' needs a CPU with native bf16 (AVX512-BF16 or AMX); "
                             "use 'torch' or 'onnxruntime'")
        return backend
    if not cpu:
        return "torch"
    exportable = installed("onnx")  # torch.onnx.export needs it for a folder without unet/model.onnx
    if native_bf16():
        return "openvino" if installed("openvino") and exportable else "torch-bf16"
    return "onnxruntime" if installed("onnxruntime") and exportable else "torch"


class BackendUNet(torch.nn.Module):
    """The UNet with another forward pass; everything else (config, encode, decode, parameters for
    the device and dtype) is the wrapped torch UNet's."""

    def __init__(self, unet, backend: str, run):
        super().__init__()
        self.torch_unet, self.backend, self._run = unet, backend, run

    @property
    def config(self):
        return self.torch_unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.torch_unet.dtype

    @property
    def device(self) -> torch.device:
        return self.torch_unet.device

    @property
    def image_units(self) -> float:
        return self.torch_unet.image_units

    def encode(self, clean, degraded):
        return self.torch_unet.encode(clean, degraded)

    def decode(self, sample, degraded):
        return self.torch_unet.decode(sample, degraded)

    def forward(self, noisy, timestep, degraded, coordinates=None, context=None) -> torch.Tensor:
        if self.backend == "torch-bf16":
            return self._run(noisy, timestep, degraded, coordinates, context)
        steps = torch.as_tensor(timestep).reshape(-1)
        if steps.numel() > 1 and not bool((steps == steps[0]).all()):
            raise ValueError(f"the {self.backend} UNet takes one timestep for all patches of a call")
        # The exported graph takes one timestep for the whole batch (shape (1,)).
        return self._run(noisy, steps[:1].long().cpu(), degraded, coordinates, context)


def with_backend(unet, backend: str = "auto", onnx_path: str | os.PathLike | None = None,
               cache_dir: str | os.PathLike | None = None, threads: int | None = None):
    """``unet`` itself (backend torch) or a :class:`BackendUNet` running it the chosen way.

    Args:
        backend: one of ``BACKEND_NAMES`` (see :func:`choose_backend`).
        onnx_path: the UNet's ONNX graph, if the model folder has one.
        cache_dir: where an ONNX graph exported on the fly is kept (``None``: ``DEFAULT_CACHE``).
        threads: intra-op threads of ONNX Runtime / OpenVINO (``None``: torch's current number).
    """
    device = next(unet.parameters()).device
    chosen = choose_backend(backend, device)
    if chosen == "torch":
        return unet
    if chosen == "torch-bf16":
        return BackendUNet(unet, chosen, _torch_bf16(unet))
    threads = threads or torch.get_num_threads()
    path = onnx_graph(unet, onnx_path, cache_dir)
    try:
        run = _onnxruntime(path, threads) if chosen == "onnxruntime" else _openvino(path, threads)
    except ImportError:
        raise
    except Exception as error:  # each runtime has its own error types for a graph it cannot use
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise GraphError(f"{path}: {chosen} cannot use this ONNX graph ({detail})") from None
    return BackendUNet(unet, chosen, run)


def _torch_bf16(unet):
    def run(noisy, timestep, degraded, coordinates, context):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return unet(noisy, timestep, degraded, coordinates, context).float()
    return run


def _feeds(noisy, timestep, degraded, coordinates, context) -> dict:
    values = (noisy, timestep, degraded, coordinates, context)
    return {name: value.detach().cpu().contiguous().numpy() for name, value in zip(ONNX_INPUTS, values)
            if value is not None}


def _onnxruntime(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(*inputs):
        feeds = {k: v for k, v in _feeds(*inputs).items() if k in names}
        return torch.from_numpy(session.run(None, feeds)[0])
    return run


def _openvino(path: Path, threads: int):
    import openvino

    core = openvino.Core()
    bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    compiled = core.compile_model(str(path), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 and native_bf16() else "f32",
    })
    # An input port may carry several names (OpenVINO adds its own): feed each by the one we gave it.
    ports = {name: index for index, port in enumerate(compiled.inputs) for name in port.get_names()
             if name in ONNX_INPUTS}
    local = threading.local()  # an infer request serves one call at a time: one per thread

    def run(*inputs):
        request = getattr(local, "request", None)
        if request is None:
            request = local.request = compiled.create_infer_request()
        feeds = {ports[k]: v for k, v in _feeds(*inputs).items() if k in ports}
        return torch.from_numpy(request.infer(feeds)[0].copy())
    return run


class _ExportedForward(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, noisy, timestep, degraded, coordinates=None, context=None):
        return self.unet(noisy, timestep.expand(noisy.shape[0]), degraded, coordinates, context)


def export_onnx(unet, path: str | os.PathLike, weights: str | None = None) -> Path:
    """Write the UNet's forward pass as ONNX (fp32, dynamic batch) to ``path``; its inputs are the
    ``(N, C, P, P)`` patches and one ``(1,)`` int64 timestep for all of them, named as in ``ONNX_INPUTS``.
    The graph records ``weights`` (default: :func:`weights_hash` of ``unet``) in its metadata."""
    weights = weights or weights_hash(unet)
    config = unet.config
    size, n = config.patch_size, 2
    inputs = {"noisy": torch.zeros(n, 3, size, size), "timestep": torch.full((1,), 500, dtype=torch.long),
              "degraded": torch.zeros(n, 3, size, size)}
    if config.use_coordinates:
        inputs["coordinates"] = torch.zeros(n, 2, size, size)
    if config.use_global_context:
        inputs["context"] = torch.zeros(n, 3, size, size)
    names = list(inputs)
    dynamic = {name: {0: "batch"} for name in [*names, "prediction"] if name != "timestep"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _ExportedForward(unet.float().cpu()).eval()
    args = tuple(inputs.values())
    if not config.use_coordinates and config.use_global_context:
        args = (*args[:3], None, args[3])
    import warnings

    # One export at a time in a process: torch's exporter keeps its state in globals (two threads
    # loading models at once failed with "GLOBALS.in_onnx_export must be True").
    with EXPORTING, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on diffusers' shape asserts
        torch.onnx.export(module, args, str(path), input_names=names, output_names=["prediction"],
                          dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False)
    import onnx

    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = WEIGHTS_KEY, weights
    onnx.save(graph, str(path))
    return path


def graph_weights(path: str | os.PathLike) -> str | None:
    """The weights hash an ONNX graph records (None: none recorded); a ValueError naming the file when
    it is not a readable ONNX graph (damaged, truncated, another kind of file)."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:  # ONNX Runtime alone reads the metadata too
        return _graph_weights_onnxruntime(Path(path))
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as error:
        raise GraphError(f"{path}: not a readable ONNX graph ({type(error).__name__}); delete it or export it "
                         "again (lpipdiff export --onnx)") from None
    if not graph.graph.node:
        raise GraphError(f"{path}: not a readable ONNX graph (it holds no operations); delete it or export it "
                         "again (lpipdiff export --onnx)")
    return {entry.key: entry.value for entry in graph.metadata_props}.get(WEIGHTS_KEY)


def _graph_weights_onnxruntime(path: Path) -> str | None:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's own error types (InvalidProtobuf, Fail, ...)
        raise GraphError(f"{path}: not a readable ONNX graph ({type(error).__name__})") from None
    return session.get_modelmeta().custom_metadata_map.get(WEIGHTS_KEY)


def onnx_graph(unet, onnx_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """The ONNX graph of exactly these weights: the model folder's ``onnx_path`` when it records them,
    else the cached export (see the module docstring). A ValueError names a folder graph made from
    other weights, or not readable."""
    weights = weights_hash(unet)
    if onnx_path and special_file(onnx_path):
        raise GraphError(f"{onnx_path}: {SPECIAL_FILE}")
    if onnx_path:
        recorded = graph_weights(onnx_path)
        if recorded == weights:
            return Path(onnx_path)
        if recorded is not None:
            raise GraphError(f"{onnx_path}: this ONNX graph was made from other weights than the UNet beside it "
                             f"(weights {recorded}, the UNet's {weights}); export it again (lpipdiff export --onnx) "
                             "or delete it")
    return export_onnx_cached(unet, cache_dir, weights)


def weights_hash(unet) -> str:
    # The config's own fields only: diffusers adds private ones (_name_or_path, ...) that differ between
    # a UNet in memory and the same UNet loaded from its folder (and JSON turns tuples into lists).
    fields = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_onnx_cached(unet, cache_dir: str | os.PathLike | None = None, weights: str | None = None) -> Path:
    """The UNet's ONNX graph in ``cache_dir``, exported on first use (a few seconds); a cached file
    that is damaged or records other weights is exported again."""
    weights = weights or weights_hash(unet)
    folder = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    path = folder / f"unet-{weights}.onnx"
    if path.is_file() and not path.is_symlink():
        try:
            if graph_weights(path) == weights:
                return path
        except GraphError:
            pass  # damaged (a disk that filled, a killed copy): rebuilt below
    partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
    try:
        export_onnx(unet, partial, weights)
        os.replace(partial, path)  # whole files only, also with several processes exporting at once
    except OSError as error:  # a cache folder that is a file, read-only, or full
        raise GraphError(f"{folder}: cannot keep the ONNX graph there ({error.strerror or error}); free some "
                         "space or pass another cache folder") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return path
