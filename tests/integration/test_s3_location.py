"""Zoo locations and handles: parsing paths and s3:// URLs once, and where a zoo in object
storage stages and keeps its study results (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightzoo.errors import UsageError
from weightzoo.io.handle import ZooHandle
from weightzoo.io.location import ZooLocation, s3_settings


@pytest.mark.parametrize("text, bucket, prefix", [
    ("s3://zoos/team/mnist", "zoos", "team/mnist"),
    ("s3://zoos/team/mnist/", "zoos", "team/mnist"),
    ("s3://zoos", "zoos", ""),
])
def test_s3_urls_name_a_bucket_and_prefix(text, bucket, prefix):
    location = ZooLocation.parse(text)
    assert location.remote and (location.bucket, location.prefix) == (bucket, prefix)
    assert location.url == f"s3://{bucket}/{prefix}".rstrip("/")
    assert ZooLocation.parse(location.url) == location and location.local_path() is None


def test_local_paths_stay_as_given_and_keep_staging_and_analyses_inside(tmp_path):
    handle = ZooHandle.at(tmp_path / "zoo")
    assert not handle.location.remote and handle.url == str(tmp_path / "zoo")
    assert (handle.staging, handle.analyses) == (tmp_path / "zoo" / "staging", tmp_path / "zoo" / "analyses")
    assert ZooLocation.parse("relative/zoo").path == "relative/zoo"
    assert ZooHandle.at(handle) is handle, "a handle is made once and passed on"


@pytest.mark.parametrize("text, message", [
    ("s3://", "expected s3://bucket/prefix"), ("s3:///prefix", "expected s3://bucket/prefix"),
    ("gs://bucket/zoo", "unsupported scheme 'gs'"), ("https://host/zoo", "unsupported scheme 'https'"),
    (Path("s3://zoos/team"), "pass the URL as a string"),  # Path collapses "//" to "/": refused, not guessed
])
def test_other_urls_are_refused_by_name(text, message):
    with pytest.raises(UsageError, match=f"zoo location .*{message}"):
        ZooHandle.at(text)


def test_a_handle_pickles_without_its_open_repository(tmp_path):
    import pickle

    handle = ZooHandle.at(tmp_path / "zoo")
    handle.repository(create=True)
    copy = pickle.loads(pickle.dumps(handle))
    assert copy == handle and "_repository" not in copy.__dict__ and copy.exists()


def test_object_storage_stages_locally_and_is_configured_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTZOO_STAGING_ROOT", str(tmp_path))
    handle = ZooHandle.at("s3://zoos/team/mnist")
    assert handle.staging == tmp_path / "zoos" / "team/mnist" / "staging"
    assert handle.analyses == tmp_path / "zoos" / "team/mnist" / "analyses"
    for name in ("WEIGHTZOO_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert s3_settings() == {"endpoint": None, "region": "us-east-1", "allow_http": False}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.example.org")
    monkeypatch.setenv("WEIGHTZOO_S3_ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert s3_settings() == {"endpoint": "http://127.0.0.1:9000", "region": "eu-west-1", "allow_http": True}
