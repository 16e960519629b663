"""One storage contract, every backend: the tests of :class:`StoreContract` run against
:class:`~sr_core.storage.LocalStore` (a ``tmp_path`` folder) and :class:`~sr_core.storage.S3Store`
(a real S3 HTTP endpoint: ``moto_server`` on loopback, the ``moto_s3`` fixture), as
zarr-python's ``StoreTests`` do for its stores."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import pytest

from sr_core.errors import InputError, StorageError
from sr_core.storage import (
    ConditionFailed,
    LocalStore,
    NotFound,
    S3Store,
    Store,
    store_for,
)


class StoreContract:
    """The contract of :class:`sr_core.storage.Store`. A subclass provides the ``store`` and
    ``root`` fixtures (``root``: a URI under which each test writes, empty at the start) and
    :meth:`make_folder` (local files need their folder; S3 keys do not)."""

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError

    @pytest.fixture
    def root(self) -> str:
        raise NotImplementedError

    def make_folder(self, uri: str) -> None:
        """Make ``uri``'s parent folder exist where the backend needs one."""

    def put(self, store: Store, uri: str, data: bytes, **cond) -> str:
        self.make_folder(uri)
        return store.put(uri, data, **cond)

    # --- read / version ---------------------------------------------------------------------

    def test_put_then_read_gives_the_bytes_and_one_version(self, store: Store, root: str):
        uri = f"{root}/a.json"
        version = self.put(store, uri, b'{"a": 1}\n')
        blob = store.read(uri)
        assert blob.data == b'{"a": 1}\n' and blob.text() == '{"a": 1}\n'
        assert blob.version == version
        info = store.stat(uri)
        assert info is not None and (info.size, info.version) == (9, version)
        assert store.read_text(uri) == '{"a": 1}\n'

    def test_version_changes_on_write(self, store: Store, root: str):
        uri = f"{root}/v.txt"
        first = self.put(store, uri, b"one")
        second = self.put(store, uri, b"two, longer")
        assert first != second
        assert store.read(uri).version == second

    def test_ranged_read(self, store: Store, root: str):
        uri = f"{root}/head.bin"
        self.put(store, uri, bytes(range(200)))
        assert store.read(uri, max_bytes=132).data == bytes(range(132))

    def test_missing_object_is_not_found(self, store: Store, root: str):
        uri = f"{root}/no/such.json"
        with pytest.raises(NotFound) as info:
            store.read(uri)
        assert isinstance(info.value, InputError)
        assert str(info.value).startswith(f"{uri}: ") and "\n" not in str(info.value)
        assert store.read_text(uri) is None
        assert store.stat(uri) is None
        assert store.exists(uri) is False

    # --- conditional put --------------------------------------------------------------------

    def test_put_if_none_match_creates_once(self, store: Store, root: str):
        uri = f"{root}/claim.json"
        version = self.put(store, uri, b"first", if_none_match=True)
        with pytest.raises(ConditionFailed) as info:
            store.put(uri, b"second", if_none_match=True)
        assert isinstance(info.value, StorageError) and str(info.value).startswith(uri)
        assert store.read(uri).data == b"first" and store.read(uri).version == version

    def test_put_if_match_needs_the_current_version(self, store: Store, root: str):
        uri = f"{root}/manifest.json"
        old = self.put(store, uri, b"v1")
        new = store.put(uri, b"v2 from the writer that read v1", if_match=old)
        assert store.read(uri).data == b"v2 from the writer that read v1"
        with pytest.raises(ConditionFailed):
            store.put(uri, b"v2 from a writer that also read v1", if_match=old)
        assert store.read(uri).version == new
        store.put(uri, b"v3", if_match=new)
        assert store.read(uri).data == b"v3"

    def test_put_if_match_on_a_missing_object_fails(self, store: Store, root: str):
        uri = f"{root}/gone.json"
        version = self.put(store, uri, b"x")
        store.delete(uri)
        with pytest.raises(ConditionFailed):
            store.put(uri, b"y", if_match=version)
        assert not store.exists(uri)

    def test_racing_creators_one_wins(self, store: Store, root: str):
        uri = f"{root}/race.json"
        self.make_folder(uri)
        wins: list[int] = []
        barrier = threading.Barrier(6)

        def create(i: int) -> None:
            barrier.wait()
            try:
                store.put(uri, f"writer {i}".encode(), if_none_match=True)
                wins.append(i)
            except ConditionFailed:
                pass

        threads = [threading.Thread(target=create, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert store.read(uri).data == f"writer {wins[0]}".encode()

    def test_racing_replacers_one_wins(self, store: Store, root: str):
        uri = f"{root}/stale-claim.json"
        seen = self.put(store, uri, b"stale")
        wins: list[int] = []
        barrier = threading.Barrier(6)

        def take_over(i: int) -> None:
            barrier.wait()
            try:
                store.put(uri, f"taker {i}".encode(), if_match=seen)
                wins.append(i)
            except ConditionFailed:
                pass

        threads = [threading.Thread(target=take_over, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert store.read(uri).data == f"taker {wins[0]}".encode()

    # --- publish ----------------------------------------------------------------------------

    def test_publish_is_atomic_and_leaves_no_temporary(self, store: Store, root: str,
                                                       tmp_path: Path):
        dst = f"{root}/out/scene_x2.tif"
        self.make_folder(dst)
        payload = os.urandom(100_000)
        for content in (payload, payload[::-1]):  # the second replaces the first
            temp = store.temp_path(dst, tmp_path / "scratch")
            Path(temp).write_bytes(content)
            store.publish(temp, dst)
            assert not os.path.exists(temp)
            assert store.read(dst).data == content
        assert [i.uri for i in store.list(f"{root}/")] == [dst]  # no temporary beside it

    # --- list / delete / exists -------------------------------------------------------------

    def test_list_with_prefix(self, store: Store, root: str):
        names = ["a/2.tif", "a/1.tif", "ab.tif", "b/1.tif", "a/sub/3.tif"]
        versions = {f"{root}/{n}": self.put(store, f"{root}/{n}", n.encode()) for n in names}
        listed = list(store.list(f"{root}/a/"))
        assert [i.uri for i in listed] == [f"{root}/a/1.tif", f"{root}/a/2.tif",
                                           f"{root}/a/sub/3.tif"]
        assert all(i.size == len(i.uri[len(root) + 1:]) for i in listed)
        assert all(i.version == versions[i.uri] for i in listed)
        assert [i.uri for i in store.list(f"{root}/a")] == [
            f"{root}/a/1.tif", f"{root}/a/2.tif", f"{root}/a/sub/3.tif", f"{root}/ab.tif"]
        assert len(list(store.list(f"{root}/"))) == len(names)
        assert list(store.list(f"{root}/nothing/")) == []

    def test_delete_and_exists(self, store: Store, root: str):
        uri = f"{root}/x.json"
        assert not store.exists(uri)
        self.put(store, uri, b"x")
        assert store.exists(uri)
        store.delete(uri)
        assert not store.exists(uri) and store.stat(uri) is None
        store.delete(uri)  # already gone: no error

    def test_store_for_picks_this_backend(self, store: Store, root: str):
        assert type(store_for(f"{root}/k")) is type(store)


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self) -> Store:
        return LocalStore()

    @pytest.fixture
    def root(self, tmp_path: Path) -> str:
        (tmp_path / "store").mkdir()
        return str(tmp_path / "store")

    def make_folder(self, uri: str) -> None:
        os.makedirs(os.path.dirname(uri), exist_ok=True)


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self) -> Store:
        return S3Store()

    @pytest.fixture
    def root(self, s3_bucket: str) -> str:
        return f"s3://{s3_bucket}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def s3_bucket(moto_s3: str) -> str:
    """A fresh bucket on the moto endpoint (created with plain boto3, not with sr_core)."""
    import boto3

    name = f"sr-contract-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
