"""Reading back an .rrd file with Rerun's own reader (rerun.chunk.RrdReader), as a viewer would load it.

    entities = rrd_entities(path)                                  # {"/camera/image": [record batches], ...}
    values = column(entities["/action/linear_x"], "Scalars:scalars")      # [[0.1], [0.2], ...]
    values = column(entities["/action/linear_x"], "Scalars:scalars", by="step")   # ordered by a timeline
"""

from __future__ import annotations


def rrd_entities(path) -> dict:
    """{entity path: [record batches]} of an .rrd."""
    from rerun.chunk import RrdReader  # noqa: PLC0415  rerun-sdk: an extra; the callers skip without it

    out = {}
    for chunk in RrdReader(path).stream():
        out.setdefault(chunk.entity_path, []).append(chunk.to_record_batch())
    return out


def column(batches, name: str, by: str | None = None) -> list:
    """One component's values over the batches, in file order, or ordered by the timeline `by`."""
    import pyarrow as pa  # noqa: PLC0415  comes with rerun-sdk

    values = pa.concat_arrays([b.column(b.schema.get_field_index(name)) for b in batches]).to_pylist()
    if by is None:
        return values
    keys = pa.concat_arrays([b.column(b.schema.get_field_index(by)) for b in batches])
    keys = (keys.cast(pa.int64()) if pa.types.is_duration(keys.type) else keys).to_pylist()  # ns, not timedelta
    return [v for _, v in sorted(zip(keys, values), key=lambda kv: kv[0])]
