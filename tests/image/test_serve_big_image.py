"""The big-image soak's code path on a small sparse image (``python -m
benchmarks.image soak --size 4GiB`` is the real one: minutes), and the image
benchmarks' sections on tiny files: they run and report, figures unchecked."""

from __future__ import annotations

from benchmarks import image


def test_a_sparse_image_published_and_fetched_by_processes_of_their_own() -> None:
    size = 3 << 20
    result = image.soak(size, leaf=8192)
    assert result["installed_bytes"] == size
    assert result["middle_ok"] == 1  # the data in the middle of the hole arrived
    assert result["provider_bytes_sent"] >= size
    for name in ("publisher_peak_rss", "provider_peak_rss", "requestor_peak_rss"):
        assert result[name] > 0


def test_publish_and_serving_sections_report_ratios() -> None:
    publish = dict((name, value) for name, value, _ in image.publish_section(1 << 20, 1))
    assert publish["publish (SHA-256 + Merkle + write + sign)"] > 0
    assert any(name.startswith("publish encrypted") for name in publish)
    serving = {name: value for name, value, _ in image.serving_section(1 << 20, 1)}
    assert serving["  ratio file / memory"] > 0
