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
    """One component's values over the batches, in file order, or ordered by the timeline `by` (a batch without
    that timeline keeps its place in the file). Durations (a timeline, a stored time) come as nanoseconds."""
    import pyarrow as pa  # noqa: PLC0415  comes with rerun-sdk

    def plain(array) -> list:
        return (array.cast(pa.int64()) if pa.types.is_duration(array.type) else array).to_pylist()

    rows: list = []
    for b in batches:
        values = plain(b.column(b.schema.get_field_index(name)))
        keys = (plain(b.column(b.schema.get_field_index(by))) if by in b.schema.names
                else range(len(rows), len(rows) + len(values)))
        rows.extend(zip(keys, values))
    return [v for _, v in (rows if by is None else sorted(rows, key=lambda kv: kv[0]))]
