"""A small xarray Dataset as the objects of a zarr v3 group, encoded in memory.

``Dataset.to_zarr`` calls zarr's synchronous API once per array, attribute update and chunk:
about 40 hand-offs to zarr's event-loop thread for one TESS cutout, which cost more CPU than
the encoding itself. `encode_dataset` does the same work with zarr's asynchronous API in a
single coroutine, run to completion in the calling thread on a private event loop whose
executor runs submitted work inline: the store is in memory and the chunks are small, so
zarr's hand-offs of each codec call to a thread pool would cost more than the codecs, and on a
busy Dask worker each thread hand-off also waits for the GIL. Each array's metadata is built
once per layout and reused (`_ArrayTemplate`): the cutouts of a run all look alike.

The variables and attributes go through xarray's own zarr encoders first (the same functions
``to_zarr`` uses: coordinates attribute, CF encoding, fill values, string types), so the
result is the group ``to_zarr(..., zarr_format=3)`` writes, object for object; the tests check
that against ``to_zarr`` itself. Those encoders are xarray internals: if a future xarray moves
them, `encode_dataset` falls back to ``to_zarr`` (slower, same result).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
from typing import Any

import numpy as np
import zarr.api.asynchronous as zarr_async
# xarray's own zarr encoders, so the bytes are exactly what to_zarr writes (tests compare them).
from xarray.backends.zarr import (
    FillValueCoder,
    encode_zarr_attr_value,
    encode_zarr_variable,
    extract_zarr_variable_encoding,
)
from xarray.coding.strings import check_vlen_dtype
from xarray.conventions import encode_dataset_coordinates
from zarr.storage import MemoryStore

__all__ = ["encode_dataset"]

log = logging.getLogger(__name__)


def encode_dataset(ds) -> dict[str, bytes]:
    """The zarr v3 group of ``ds`` as ``{key: bytes}`` (``zarr.json``, ``flux/zarr.json``, ``flux/c/0/0/0``...).

    Parameters
    ----------
    ds : xarray.Dataset
        In memory (numpy-backed), without zarr-incompatible encodings.

    Returns
    -------
    dict
        Store keys relative to the group, as ``to_zarr(MemoryStore, zarr_format=3)`` writes them.
    """
    mapping: dict = {}
    try:
        plan = _encoded_variables(ds)
    except ImportError:  # only with an xarray that moved these internals
        log.debug("xarray's zarr encoders moved; using Dataset.to_zarr", exc_info=True)
        ds.to_zarr(MemoryStore(store_dict=mapping), mode="w", zarr_format=3, consolidated=False)
    else:
        _run_inline(_write_group(MemoryStore(store_dict=mapping), *plan))
    return {key: value.to_bytes() for key, value in mapping.items()}


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """An executor that runs each call at once in the submitting thread (for `_run_inline`).

    A ThreadPoolExecutor subclass only because asyncio accepts nothing else as a loop's
    default executor; it never starts a thread.
    """

    def submit(self, fn, /, *args, **kwargs):
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the awaiting coroutine
            future.set_exception(err)
        return future


# Idle private loops, reused: making one costs a selector and a socket pair.
_IDLE_LOOPS: "queue.SimpleQueue[asyncio.AbstractEventLoop]" = queue.SimpleQueue()


def _run_inline(coroutine) -> Any:
    """Run ``coroutine`` to completion in this thread (no hand-off to any other thread)."""
    try:
        loop = _IDLE_LOOPS.get_nowait()
    except queue.Empty:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(_InlineExecutor(max_workers=1))
    try:
        result = loop.run_until_complete(coroutine)
    except BaseException:
        # zarr may leave tasks of its own running after a failure: cancel them, and drop the loop.
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
        raise
    _IDLE_LOOPS.put(loop)
    return result


def _encoded_variables(ds) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(arrays, group attributes)``: per variable the arguments of ``create_array`` and its data."""
    variables, attrs = encode_dataset_coordinates(ds)
    arrays: dict[str, Any] = {}
    for name, var in variables.items():
        var = encode_zarr_variable(var, zarr_format=3)
        var_attrs = dict(var.attrs)
        fill_value = var.encoding.pop("fill_value", None)
        if fill_value is None and var.dtype.kind == "f":
            fill_value = np.nan  # xarray's default for floats (zarr's would be 0)
        if var_attrs.get("_FillValue") is not None:
            var_attrs["_FillValue"] = FillValueCoder.encode(var_attrs["_FillValue"], var.dtype)
        else:
            var_attrs.pop("_FillValue", None)
        encoding = extract_zarr_variable_encoding(var, name=name, zarr_format=3)
        arrays[str(name)] = dict(
            shape=var.shape,
            dtype=str if check_vlen_dtype(var.dtype) is str else var.dtype,
            fill_value=fill_value,
            chunks=encoding.get("chunks") or "auto",
            attributes={k: encode_zarr_attr_value(v) for k, v in var_attrs.items()},
            dimension_names=var.dims,
            data=np.asarray(var.values),
        )
    return arrays, {k: encode_zarr_attr_value(v) for k, v in attrs.items()}


async def _write_group(store, arrays: dict[str, Any], attrs: dict[str, Any]) -> None:
    await zarr_async.open_group(store=store, mode="w", zarr_format=3, attributes=attrs)
    for name, spec in arrays.items():
        spec = dict(spec)
        data = spec.pop("data")
        key = (name, repr(sorted(spec.items())))
        template = _TEMPLATES.pop(key, None) or await _ArrayTemplate.create(name, spec)
        for item, value in (await template.encode(data)).items():
            await store.set(item, value)
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        _TEMPLATES[key] = template


class _ArrayTemplate:
    """One array's zarr metadata, built once, then reused for every array described alike.

    Building an array's metadata (data type resolution, codecs, JSON) is half of zarr's cost
    for a small cutout, and every cutout of a run shares it: same variables, shapes, dtypes,
    attributes. A template keeps the array in a private in-memory group; encoding new data is
    then only zarr's chunk write, and the template's objects are copied out.
    """

    def __init__(self, name: str, array, objects: dict):
        self.name = name
        self.array = array
        self.objects = objects  # the private store's dict

    @classmethod
    async def create(cls, name: str, spec: dict[str, Any]) -> "_ArrayTemplate":
        objects: dict = {}
        group = await zarr_async.open_group(store=MemoryStore(store_dict=objects), mode="w", zarr_format=3)
        return cls(name, await group.create_array(name, **spec), objects)

    async def encode(self, data: np.ndarray) -> dict[str, Any]:
        """``{key: Buffer}`` of the array holding ``data``, keys relative to the group."""
        prefix = f"{self.name}/"
        if data.size:
            # Writing the whole array rewrites every chunk of the last data, or deletes it
            # when the new one is all fill value (zarr writes no empty chunks): nothing stale stays.
            await self.array.setitem(Ellipsis, data)
        return {key: value for key, value in self.objects.items() if key.startswith(prefix)}


# Templates by (name, creation arguments); taken out while in use, so threads never share one.
_TEMPLATES: dict[tuple[str, str], _ArrayTemplate] = {}
_MAX_TEMPLATES = 256
