"""The model assets' metadata as people read it: rounded figures, nothing that does not apply."""

import math

import dagster as dg

from assets.model_metadata import figures, for_people, plot_entries
from ml.workflow import Tracking


def test_figures_are_rounded_to_four_significant_digits_and_missing_ones_left_out():
    assert for_people(0.13439623296766154) == 0.1344
    assert for_people(1234.5678) == 1235.0 and for_people(0.000123456) == 0.0001235
    assert for_people(0) == 0.0 and for_people(float("nan")) is None and for_people(None) is None
    out = figures({"map@10": 0.13439623296766154, "map@10 champion": float("nan"), "vs oracle": None})
    assert out == {"map@10": dg.MetadataValue.float(0.1344)}
    assert not any(isinstance(v.value, float) and math.isnan(v.value) for v in out.values())


def test_plots_are_short_markdown_images_the_asset_page_shows_inline():
    tr = Tracking(tracking_uri="sqlite:///x.db", ui_url="http://127.0.0.1:5000/")
    entries = plot_entries(tr, "abc123", {"map_at_k": "/data/evaluation/abc123/map_at_k.png"})
    (label, md), = entries.items()
    assert label == "plot: MAP@K on the held-out days"
    # the UI renders a Markdown entry inline only under 1,000 characters (a data: URI is not)
    assert md.value == ("![MAP@K on the held-out days](http://127.0.0.1:5000/get-artifact?"
                        "path=evaluation/map_at_k.png&run_uuid=abc123)") and len(md.value) < 1000
