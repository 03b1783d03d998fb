"""The Hugging Face `dataset_info` features of a set, typed from its scan the way `datasets` itself writes them."""

from __future__ import annotations

import pyarrow as pa

from pipelines.card.scan import SetScan


def _dtype(t: pa.DataType) -> str:
    return {"double": "float64", "float": "float32", "halffloat": "float16"}.get(str(t), str(t))


def _feature(t: pa.DataType) -> dict:
    """One feature's type as `datasets` writes it in a card (`Features._to_yaml_list`)."""
    if pa.types.is_struct(t):
        return {"struct": [{"name": f.name, **_feature(f.type)} for f in t]}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _inner(t.value_type)}
    return {"dtype": _dtype(t)}


def _inner(t: pa.DataType):
    if pa.types.is_struct(t):
        return [{"name": f.name, **_feature(f.type)} for f in t]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"list": _inner(t.value_type)}
    return _dtype(t)


def features(scan: SetScan) -> list[dict]:
    """The features `datasets.load_dataset("webdataset", ...)` gives the set: one per member extension (the json
    typed from every sample, mp4 as video, jpg as image, npy as nested lists), then `__key__` and `__url__`."""
    out = []
    for ext in scan.exts:
        if ext == "json" and scan.json_type is not None:
            out.append({"name": ext, **_feature(scan.json_type)})
        elif ext in ("mp4", "jpg"):
            out.append({"name": ext, "dtype": "video" if ext == "mp4" else "image"})
        elif ext == "npy" and scan.npy is not None:
            nested = scan.npy[0]
            for _ in range(scan.npy[1] - 1):
                nested = {"list": nested}
            out.append({"name": ext, "list": nested})
        else:
            out.append({"name": ext, "dtype": "binary"})
    return out + [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"}]
