"""Zoo locations: parsing paths and s3:// URLs, and where a zoo in object storage stages (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightzoo.io.location import parse_location, s3_settings


@pytest.mark.parametrize("text, bucket, prefix", [
    ("s3://zoos/team/mnist", "zoos", "team/mnist"),
    ("s3://zoos/team/mnist/", "zoos", "team/mnist"),
    ("s3://zoos", "zoos", ""),
    (Path("s3://zoos/team/mnist"), "zoos", "team/mnist"),  # Path collapses "//" to "/"
])
def test_s3_urls_name_a_bucket_and_prefix(text, bucket, prefix):
    location = parse_location(text)
    assert location.remote and (location.bucket, location.prefix) == (bucket, prefix)
    assert location.url == f"s3://{bucket}/{prefix}".rstrip("/")
    assert parse_location(Path(location.url)) == location


def test_local_paths_stay_as_given(tmp_path):
    location = parse_location(tmp_path / "zoo")
    assert not location.remote and location.url == str(tmp_path / "zoo")
    assert location.staging_root() == tmp_path / "zoo"
    assert parse_location("relative/zoo").path == "relative/zoo"


@pytest.mark.parametrize("text", ["s3://", "s3:///prefix", "gs://bucket/zoo", "https://host/zoo"])
def test_other_urls_are_refused_by_name(text):
    with pytest.raises(ValueError, match="zoo location"):
        parse_location(text)


def test_object_storage_stages_locally_and_is_configured_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTZOO_STAGING_ROOT", str(tmp_path))
    assert parse_location("s3://zoos/team/mnist").staging_root() == tmp_path / "zoos" / "team/mnist"
    for name in ("WEIGHTZOO_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert s3_settings() == {"endpoint": None, "region": "us-east-1", "allow_http": False}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.org")
    monkeypatch.setenv("WEIGHTZOO_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert s3_settings() == {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1", "allow_http": True}
