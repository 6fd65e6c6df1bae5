"""`load_desired_state`: every user-facing error, with its file, line, column and field; and the
model a valid repo produces."""

import textwrap
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.model.desired import (
    DesiredState,
    FileSource,
    HfSource,
    NodeSource,
    HttpSource,
    Placement,
    Position,
    S3Source,
    ValidationError,
)
from reconciler.desired.validate import check_env_refs, expand_env_refs, load_desired_state

NODES = """
    apiVersion: syncbit/v1
    kind: Node
    metadata:
      name: gpu-01
      labels: {gpu: a100, zone: a}
    spec:
      peer: 10.0.0.1:6881
      api: 10.0.0.1:7070
      capacity: 2TiB
    ---
    apiVersion: syncbit/v1
    kind: Node
    metadata:
      name: gpu-02
      labels:
        gpu: h100
    spec:
      peer: 10.0.0.2:6881
      api: 10.0.0.2:7070
      storageGroup: nfs-a
    """


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "state"
    write(root, "nodes.yaml", NODES)
    return root


def load(root: Path) -> DesiredState:
    result = load_desired_state(root, "rev-1")
    assert isinstance(result, DesiredState), "\n".join(map(str, result))
    return result


def errors(root: Path) -> list[ValidationError]:
    result = load_desired_state(root, "rev-1")
    assert isinstance(result, list), f"expected errors, got {result}"
    return result


def only_error(root: Path) -> ValidationError:
    errs = errors(root)
    assert len(errs) == 1, "\n".join(map(str, errs))
    return errs[0]


def make_lock(root: Path, rel: str, files: dict[str, bytes] | None = None) -> bytes:
    """A real hybrid torrent of a small directory, written at `root/rel`."""
    src = root.parent / "lock-src" / "ds"
    src.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {"a.bin": b"a" * 1000, "sub/b.bin": b"b" * 20000}).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    entries = sorted(lt.list_files(str(src)), key=lambda e: e.filename)
    ct = lt.create_torrent(entries, 16384, 0)
    lt.set_piece_hashes(ct, str(src.parent))
    ct.set_creation_date(0)
    data = lt.bencode(ct.generate())
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    return data


# ---------------------------------------------------------------------------------------------
# A valid repo


def test_valid_repo_produces_the_model(repo: Path) -> None:
    make_lock(repo, "locks/llama.torrent")
    write(repo, "datasets/models.yml", """
        # yaml-language-server: $schema=../../schemas/dataset.schema.json
        apiVersion: syncbit/v1
        kind: Dataset
        metadata:
          name: llama
        spec:
          version: "3.1"
          source:
            http:
              baseUrl: https://models.example.com/llama
              files: [config.json, weights/model-00001.safetensors]
              headers:
                Authorization: "Bearer ${HF_TOKEN}"
                X-Price: "$$5"
          mirrors:
            - s3: {bucket: models, prefix: llama/, endpointUrl: "http://127.0.0.1:8333"}
            - hf: {repo: meta-llama/Llama-3.1-8B, revision: main, include: ["*.json"]}
          placement:
            replicas: 2
            selector: {gpu: a100}
          path: models/llama
          lock: locks/llama.torrent
          priority: high
          keepVersions: 3
        ---
        ---
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: shards}
        spec:
          version: v7
          source: {file: {path: ../nfs/shards}}
          placement: {nodes: [gpu-01, gpu-02]}
          path: /data/shards
          suspend: true
        ---
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: tokenizer}
        spec:
          version: "1"
          source:
            http:
              urls: [https://cdn.example.com/t/tokenizer.json?sig=abc]
          placement: {all: true}
          path: tok
        ---
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: corpus}
        spec:
          version: "2024-06"
          source: {s3: {bucket: data, keys: [a/1.parquet, a/2.parquet], region: eu-west-1}}
          placement: {replicas: 1}
          path: corpus
          keepVersions: 0
        """)
    state = load(repo)
    assert state.revision == "rev-1"
    assert list(state.nodes) == ["gpu-01", "gpu-02"]
    gpu1, gpu2 = state.nodes["gpu-01"], state.nodes["gpu-02"]
    assert gpu1.capacity == 2 * 1024**4
    assert gpu1.labels == {"gpu": "a100", "zone": "a"}
    assert (gpu1.peer, gpu1.api, gpu1.storage_group) == ("10.0.0.1:6881", "10.0.0.1:7070", None)
    assert gpu1.position == Position("nodes.yaml", 1, 1)
    assert (gpu2.capacity, gpu2.storage_group, gpu2.labels) == (None, "nfs-a", {"gpu": "h100"})
    assert gpu2.position == Position("nodes.yaml", 11, 1)

    assert list(state.datasets) == ["llama", "shards", "tokenizer", "corpus"]
    llama = state.datasets["llama"]
    assert llama.position == Position("datasets/models.yml", 2, 1)
    assert llama.version == "3.1"
    assert llama.source == HttpSource(
        base_url="https://models.example.com/llama",
        files=("config.json", "weights/model-00001.safetensors"),
        headers={"Authorization": "Bearer ${HF_TOKEN}", "X-Price": "$$5"})
    assert llama.mirrors == (
        S3Source(bucket="models", prefix="llama/", endpoint_url="http://127.0.0.1:8333"),
        HfSource(repo="meta-llama/Llama-3.1-8B", revision="main", include=("*.json",)))
    assert llama.placement == Placement(replicas=2, selector={"gpu": "a100"})
    assert (llama.path, llama.priority, llama.keep_versions, llama.suspend) == (
        "models/llama", "high", 3, False)
    assert llama.lock is not None
    assert llama.lock.path == "locks/llama.torrent"
    assert llama.lock.name == "ds"
    assert llama.lock.total_bytes == 21000
    assert dict(llama.lock.files) == {"a.bin": 1000, "sub/b.bin": 20000}
    assert len(llama.lock.info_hash) == 64 and len(llama.lock.info_hash_v1) == 40

    shards = state.datasets["shards"]
    assert shards.source == FileSource("../nfs/shards")
    assert shards.placement == Placement(nodes=("gpu-01", "gpu-02"))
    assert (shards.suspend, shards.priority, shards.keep_versions, shards.lock) == (
        True, "normal", 1, None)
    assert shards.position == Position("datasets/models.yml", 27, 1)

    tok = state.datasets["tokenizer"]
    assert tok.source == HttpSource(urls=("https://cdn.example.com/t/tokenizer.json?sig=abc",))
    assert tok.placement == Placement(all=True)

    corpus = state.datasets["corpus"]
    assert corpus.source == S3Source(bucket="data", keys=("a/1.parquet", "a/2.parquet"),
                                     region="eu-west-1")
    assert corpus.keep_versions == 0
    # plain Python values, not ruamel's
    assert type(corpus.placement.replicas) is int
    assert type(llama.placement.selector) is dict


def test_model_types_are_plain(repo: Path) -> None:
    state = load(repo)
    node = state.nodes["gpu-01"]
    assert type(node.labels) is dict and all(type(v) is str for v in node.labels.values())
    assert type(node.capacity) is int


def test_hidden_directories_are_skipped(repo: Path) -> None:
    write(repo, ".git/junk.yaml", "this: [is not even valid\n")
    write(repo, ".github/workflows/ci.yml", "on: push\n")
    assert set(load(repo).nodes) == {"gpu-01", "gpu-02"}


def test_root_through_a_symlink(repo: Path) -> None:
    link = repo.parent / "current"
    link.symlink_to(repo)
    state = load(link)
    assert state.nodes["gpu-01"].position == Position("nodes.yaml", 1, 1)


def test_empty_repo_is_rejected(tmp_path: Path) -> None:
    error = only_error(tmp_path)
    assert (error.file, error.field) == (".", "(repo)")
    assert "no documents found" in error.message


# ---------------------------------------------------------------------------------------------
# YAML level


def test_yaml_syntax_error(repo: Path) -> None:
    write(repo, "bad.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata:
          name: x
         spec: {}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("bad.yaml", 5, 2, "(yaml)")
    assert error.message.startswith("invalid YAML: ")


def test_duplicate_key(repo: Path) -> None:
    write(repo, "dup.yaml", """
        apiVersion: syncbit/v1
        kind: Node
        metadata:
          name: gpu-03
        spec:
          peer: 10.0.0.3:6881
          api: 10.0.0.3:7070
          peer: 10.0.0.4:6881
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("dup.yaml", 8, 3, "(yaml)")
    assert "duplicate key 'peer'" in error.message


def test_document_that_is_not_a_mapping(repo: Path) -> None:
    write(repo, "list.yaml", "- a\n- b\n")
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("list.yaml", 1, 1, "(document)")
    assert "must be a mapping" in error.message


def test_not_utf8(repo: Path) -> None:
    (repo / "bin.yaml").write_bytes(b"kind: \xff\n")
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("bin.yaml", 1, 7, "(file)")
    assert "not valid UTF-8" in error.message


# ---------------------------------------------------------------------------------------------
# Envelope: apiVersion, kind, metadata


def test_wrong_api_version(repo: Path) -> None:
    write(repo, "n.yaml", """
        apiVersion: syncbit/v2
        kind: Node
        metadata: {name: gpu-03}
        spec: {peer: "h:1", api: "h:2"}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("n.yaml", 1, 13, "apiVersion")
    assert error.message == "must be syncbit/v1 (got 'syncbit/v2')"


def test_unknown_kind(repo: Path) -> None:
    write(repo, "k.yaml", """
        apiVersion: syncbit/v1
        kind: Cluster
        metadata: {name: c}
        spec: {}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("k.yaml", 2, 7, "kind")
    assert error.message == "unknown kind 'Cluster' (allowed: Node, Dataset)"


def test_missing_kind(repo: Path) -> None:
    write(repo, "k.yaml", "apiVersion: syncbit/v1\nmetadata: {name: c}\n")
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("k.yaml", 1, 1, "kind")
    assert "missing required field 'kind'" in error.message


def test_missing_metadata_name(repo: Path) -> None:
    write(repo, "n.yaml", """
        apiVersion: syncbit/v1
        kind: Node
        metadata:
          labels: {gpu: a100}
        spec: {peer: "h:1", api: "h:2"}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("n.yaml", 3, 1, "metadata.name")
    assert error.message == "missing required field 'name'"


def test_missing_spec(repo: Path) -> None:
    write(repo, "n.yaml", "apiVersion: syncbit/v1\nkind: Node\nmetadata: {name: gpu-03}\n")
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("n.yaml", 1, 1, "spec")
    assert error.message == "missing required field 'spec'"


@pytest.mark.parametrize("name", ["GPU-01", "gpu_01", "-gpu", "gpu-", "a" * 64, "gpu.01"])
def test_bad_dns_name(repo: Path, name: str) -> None:
    write(repo, "n.yaml", f"""
        apiVersion: syncbit/v1
        kind: Node
        metadata:
          name: {name}
        spec: {{peer: "h:1", api: "h:2"}}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("n.yaml", 4, 9, "metadata.name")
    assert error.message.startswith("must be a lowercase DNS label")
    assert f"(got '{name[:77]}" in error.message


def test_duplicate_names_per_kind(repo: Path) -> None:
    write(repo, "racks/b.yaml", """
        apiVersion: syncbit/v1
        kind: Node
        metadata:
          name: gpu-02
        spec: {peer: "10.0.0.9:6881", api: "10.0.0.9:7070"}
        ---
        # the same name in another kind is fine
        apiVersion: syncbit/v1
        kind: Dataset
        metadata:
          name: gpu-02
        spec:
          version: "1"
          source: {file: {path: /nfs/x}}
          placement: {all: true}
          path: x
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == (
        "racks/b.yaml", 4, 9, "metadata.name")
    assert error.message == "duplicate Node name 'gpu-02' (first defined at nodes.yaml:14)"


# ---------------------------------------------------------------------------------------------
# Unknown fields


def test_unknown_top_level_field(repo: Path) -> None:
    write(repo, "n.yaml", """
        apiVersion: syncbit/v1
        kind: Node
        metadata: {name: gpu-03}
        spec: {peer: "h:1", api: "h:2"}
        status: {}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("n.yaml", 5, 1, "status")
    assert error.message == "unknown field 'status' (allowed: apiVersion, kind, metadata, spec)"


def test_unknown_field_in_spec_suggests_the_right_one(repo: Path) -> None:
    write(repo, "d.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: d}
        spec:
          version: "1"
          source: {file: {path: /nfs/x}}
          placement: {all: true}
          path: x
          keepVersion: 2
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 9, 3, "spec.keepVersion")
    assert error.message == "unknown field 'keepVersion': did you mean 'keepVersions'?"


def test_unknown_field_in_source(repo: Path) -> None:
    write(repo, "d.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: d}
        spec:
          version: "1"
          source:
            s3:
              bucket: b
              secretKey: hunter2
          placement: {all: true}
          path: x
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == (
        "d.yaml", 9, 7, "spec.source.s3.secretKey")
    assert error.message.startswith("unknown field 'secretKey' (allowed: bucket, prefix, keys,")


# ---------------------------------------------------------------------------------------------
# Placement


DATASET_HEAD = """
    apiVersion: syncbit/v1
    kind: Dataset
    metadata: {name: d}
    spec:
      version: "1"
      source: {file: {path: /nfs/x}}
      path: x
"""  # the placement comes on line 8


def dataset_with(repo: Path, tail: str) -> None:
    write(repo, "d.yaml", textwrap.dedent(DATASET_HEAD).lstrip("\n")
          + textwrap.indent(textwrap.dedent(tail).lstrip("\n"), "  "))


def test_two_placement_modes(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          replicas: 2
          all: true
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 8, 3, "spec.placement")
    assert error.message == ("exactly one of nodes, replicas, all must be set "
                             "(found replicas, all)")


def test_zero_placement_modes(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          selector: {gpu: a100}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 8, 3, "spec.placement")
    assert error.message == "exactly one of nodes, replicas, all must be set (found none)"


def test_replicas_zero(repo: Path) -> None:
    dataset_with(repo, "placement: {replicas: 0}\n")
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == (
        "d.yaml", 8, 25, "spec.placement.replicas")
    assert error.message == "must be at least 1 (got 0)"


def test_all_false(repo: Path) -> None:
    dataset_with(repo, "placement: {all: false}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 20, "spec.placement.all")
    assert error.message.startswith("must be true")


def test_unknown_node_in_placement(repo: Path) -> None:
    dataset_with(repo, """
        placement:
          nodes:
            - gpu-01
            - gpu-09
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == (
        "d.yaml", 11, 9, "spec.placement.nodes[1]")
    assert error.message == "unknown node 'gpu-09': no Node document has this name"


def test_selector_values_must_be_strings(repo: Path) -> None:
    dataset_with(repo, "placement: {all: true, selector: {nvlink: true}}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 45, "spec.placement.selector.nvlink")
    assert error.message == "must be a string (got boolean true): quote it"


# ---------------------------------------------------------------------------------------------
# Sources


SOURCE_HEAD = """
    apiVersion: syncbit/v1
    kind: Dataset
    metadata: {name: d}
    spec:
      version: "1"
      placement: {all: true}
      path: x
"""  # the source comes on line 8


def dataset_source(repo: Path, source: str) -> None:
    write(repo, "d.yaml", textwrap.dedent(SOURCE_HEAD).lstrip("\n")
          + textwrap.indent(textwrap.dedent(source).lstrip("\n"), "  "))


def test_unknown_source_type(repo: Path) -> None:
    dataset_source(repo, """
        source:
          ftp: {url: "ftp://x/y"}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 9, 5, "spec.source.ftp")
    assert error.message == "unknown source type 'ftp' (allowed: http, s3, hf, file, node)"


def test_two_source_types(repo: Path) -> None:
    dataset_source(repo, """
        source:
          file: {path: /nfs/x}
          s3: {bucket: b}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 8, 3, "spec.source")
    assert error.message == "exactly one of http, s3, hf, file, node must be set (found file, s3)"


def test_empty_source(repo: Path) -> None:
    dataset_source(repo, "source: {}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 3, "spec.source")
    assert error.message == "exactly one of http, s3, hf, file, node must be set (found none)"


def test_http_needs_base_url_with_files_or_urls(repo: Path) -> None:
    dataset_source(repo, """
        source:
          http:
            urls: [https://x/a.bin]
            files: [a.bin]
        """)
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (9, 5, "spec.source.http")
    assert error.message == "set either baseUrl with files, or urls (found urls, files)"


@pytest.mark.parametrize(("path", "fragment"), [
    ("../etc/passwd", "must not contain '..' segments"),
    ("/etc/passwd", "must be relative, not absolute"),
    ("a//b", "must not contain empty segments"),
    ("dir/", "must not contain empty segments"),
    ("a/./b", "must not contain '.' segments"),
])
def test_http_files_must_be_clean_relative_paths(repo: Path, path: str, fragment: str) -> None:
    dataset_source(repo, f"""
        source:
          http:
            baseUrl: https://x.example.com/
            files:
              - ok.bin
              - "{path}"
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == (
        "d.yaml", 13, 11, "spec.source.http.files[1]")
    assert error.message.startswith(f"file path {fragment}")
    assert error.message.endswith(f"(got '{path}')")


def test_s3_keys_must_be_clean_relative_paths(repo: Path) -> None:
    dataset_source(repo, "source: {s3: {bucket: b, keys: [a/../../b]}}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 35, "spec.source.s3.keys[0]")
    assert error.message == "key must not contain '..' segments (got 'a/../../b')"


def test_s3_prefix_and_keys_together(repo: Path) -> None:
    dataset_source(repo, "source: {s3: {bucket: b, prefix: p/, keys: [a]}}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 40, "spec.source.s3")
    assert error.message == "prefix and keys cannot be set together"


def test_url_without_file_name(repo: Path) -> None:
    dataset_source(repo, "source: {http: {urls: ['https://x.example.com/dir/']}}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 26, "spec.source.http.urls[0]")
    assert error.message.startswith("url must end with a file name")


def test_source_errors_in_mirrors(repo: Path) -> None:
    dataset_source(repo, """
        source: {file: {path: /nfs/x}}
        mirrors:
          - http: {baseUrl: "https://m/", files: [../x]}
          - gopher: {}
        """)
    errs = errors(repo)
    assert [(e.line, e.col, e.field) for e in errs] == [
        (10, 45, "spec.mirrors[0].http.files[0]"),
        (11, 7, "spec.mirrors[1].gopher"),
    ]
    assert errs[1].message == "unknown source type 'gopher' (allowed: http, s3, hf, file, node)"


@pytest.mark.parametrize(("value", "fragment"), [
    ("$", "'$' at character 1 must start ${NAME}"),
    ("Bearer ${", "unterminated '${' at character 8"),
    ("${1X}", "invalid variable name '1X'"),
    ("${}", "invalid variable name ''"),
    ("a $TOKEN", "'$' at character 3 must start ${NAME}"),
])
def test_bad_variable_syntax_in_headers(repo: Path, value: str, fragment: str) -> None:
    dataset_source(repo, f"""
        source:
          http:
            urls: [https://x.example.com/a.bin]
            headers:
              Authorization: '{value}'
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == (
        "d.yaml", 12, 24, "spec.source.http.headers.Authorization")
    assert fragment in error.message


def test_header_errors_never_show_the_value(repo: Path) -> None:
    dataset_source(repo, """
        source:
          http:
            urls: [https://x.example.com/a.bin]
            headers: {Authorization: 12345678}
        """)
    error = only_error(repo)
    assert error.field == "spec.source.http.headers.Authorization"
    assert error.message == "must be a string"
    assert "12345678" not in str(error)


def test_variable_syntax_helpers() -> None:
    assert check_env_refs("Bearer ${TOKEN} costs $$5") is None
    assert expand_env_refs("Bearer ${TOKEN} costs $$5", {"TOKEN": "t0k"}) == "Bearer t0k costs $5"
    with pytest.raises(ValueError, match="environment variable TOKEN is not set"):
        expand_env_refs("${TOKEN}", {})


def test_file_source_path_must_not_be_empty(repo: Path) -> None:
    dataset_source(repo, "source: {file: {path: ''}}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 25, "spec.source.file.path")
    assert error.message == "must not be empty"


def test_hf_repo_type(repo: Path) -> None:
    dataset_source(repo, "source: {hf: {repo: org/name, repoType: modle}}\n")
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (8, 43, "spec.source.hf.repoType")
    assert error.message == "must be one of model, dataset, space (got 'modle')"


# ---------------------------------------------------------------------------------------------
# Dataset fields


def test_path_with_dot_dot(repo: Path) -> None:
    write(repo, "d.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: d}
        spec:
          version: "1"
          source: {file: {path: /nfs/x}}
          placement: {all: true}
          path: models/../../etc
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 8, 9, "spec.path")
    assert error.message == "must not contain '..' segments (got 'models/../../etc')"


def test_version_must_be_a_string(repo: Path) -> None:
    write(repo, "d.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: d}
        spec:
          version: 1.10
          source: {file: {path: /nfs/x}}
          placement: {all: true}
          path: x
        """)
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (5, 12, "spec.version")
    assert error.message == "must be a string (got number 1.1): quote it"


def test_missing_lock_file(repo: Path) -> None:
    write(repo, "d.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: d}
        spec:
          version: "1"
          source: {file: {path: /nfs/x}}
          placement: {all: true}
          path: x
          lock: locks/d.torrent
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 9, 9, "spec.lock")
    assert error.message.startswith("lock file 'locks/d.torrent' does not exist")


def test_lock_that_is_not_a_torrent(repo: Path) -> None:
    write(repo, "locks/d.torrent", "this is not bencode\n")
    write(repo, "d.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: d}
        spec:
          version: "1"
          source: {file: {path: /nfs/x}}
          placement: {all: true}
          path: x
          lock: locks/d.torrent
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("d.yaml", 9, 9, "spec.lock")
    assert error.message.startswith("lock 'locks/d.torrent' is invalid: ")


@pytest.mark.parametrize(("lock", "fragment"), [
    ("../outside.torrent", "points outside the state repo"),
    ("/etc/passwd", "must be a path relative to the state repo root"),
    ("locks", "is not a file"),
])
def test_lock_must_be_a_file_inside_the_repo(repo: Path, lock: str, fragment: str) -> None:
    make_lock(repo.parent, "outside.torrent")
    (repo / "locks").mkdir()
    write(repo, "d.yaml", f"""
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {{name: d}}
        spec:
          version: "1"
          source: {{file: {{path: /nfs/x}}}}
          placement: {{all: true}}
          path: x
          lock: {lock}
        """)
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (9, 9, "spec.lock")
    assert fragment in error.message


def test_lock_symlink_escaping_the_repo(repo: Path) -> None:
    make_lock(repo.parent, "outside.torrent")
    (repo / "locks").mkdir()
    (repo / "locks" / "d.torrent").symlink_to(repo.parent / "outside.torrent")
    dataset_with(repo, "placement: {all: true}\nlock: locks/d.torrent\n")
    error = only_error(repo)
    assert error.field == "spec.lock"
    assert "points outside the state repo" in error.message


@pytest.mark.parametrize(("capacity", "fragment"), [
    ("2 TB of disk", "must be a number of bytes or a size such as"),
    ("1.5", "a number of bytes must be whole"),
    ("-1", "must be a number of bytes or a size"),
    ("2XB", "must be a number of bytes or a size"),
])
def test_bad_capacity(repo: Path, capacity: str, fragment: str) -> None:
    write(repo, "n.yaml", f"""
        apiVersion: syncbit/v1
        kind: Node
        metadata: {{name: gpu-03}}
        spec:
          peer: 10.0.0.3:6881
          api: 10.0.0.3:7070
          capacity: "{capacity}"
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == ("n.yaml", 7, 13, "spec.capacity")
    assert fragment in error.message


@pytest.mark.parametrize("addr", ["10.0.0.3", "10.0.0.3:99999", "10.0.0.3:0", "http://h:1",
                                  "10.0.0.256:6881"])
def test_bad_peer_address(repo: Path, addr: str) -> None:
    write(repo, "n.yaml", f"""
        apiVersion: syncbit/v1
        kind: Node
        metadata: {{name: gpu-03}}
        spec:
          peer: "{addr}"
          api: 10.0.0.3:7070
        """)
    error = only_error(repo)
    assert (error.line, error.col, error.field) == (5, 9, "spec.peer")
    assert ("must be host:port" in error.message
            or "port must be between 1 and 65535" in error.message
            or "is not an IPv4 address" in error.message)


# ---------------------------------------------------------------------------------------------
# Many errors at once


def test_many_errors_all_reported_and_sorted(repo: Path) -> None:
    write(repo, "b.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: Bad}
        spec:
          version: "1"
          source: {ftp: {}}
          placement: {replicas: 0, all: true}
          path: ../x
          extra: 1
        """)
    write(repo, "a.yaml", """
        apiVersion: syncbit/v2
        kind: Node
        metadata: {name: gpu-09}
        spec: {peer: "h:1", api: "h:2", capacity: lots}
        ---
        kind: Widget
        """)
    write(repo, "c/broken.yaml", "a: [\n")
    errs = errors(repo)
    got = [(e.file, e.line, e.col, e.field) for e in errs]
    assert got == sorted(got)
    assert got == [
        ("a.yaml", 1, 13, "apiVersion"),
        ("a.yaml", 4, 43, "spec.capacity"),
        ("a.yaml", 6, 1, "apiVersion"),
        ("a.yaml", 6, 7, "kind"),
        ("b.yaml", 3, 18, "metadata.name"),
        ("b.yaml", 6, 12, "spec.source.ftp"),
        ("b.yaml", 7, 3, "spec.placement"),
        ("b.yaml", 7, 25, "spec.placement.replicas"),
        ("b.yaml", 8, 9, "spec.path"),
        ("b.yaml", 9, 3, "spec.extra"),
        ("c/broken.yaml", 2, 1, "(yaml)"),
    ]
    assert all(str(e).startswith(f"{e.file}:{e.line}:{e.col}: {e.field}: ") for e in errs)
    assert errs[0].to_json() == {"file": "a.yaml", "line": 1, "col": 13, "field": "apiVersion",
                                 "message": "must be syncbit/v1 (got 'syncbit/v2')"}


def test_unknown_node_not_reported_when_a_file_failed_to_parse(repo: Path) -> None:
    # gpu-03 may well be defined in the broken file: do not add noise about it
    write(repo, "more-nodes.yaml", "apiVersion: syncbit/v1\nkind: Node\nmetadata: {name: gpu-03\n")
    dataset_with(repo, "placement: {nodes: [gpu-03]}\n")
    errs = errors(repo)
    assert [e.field for e in errs] == ["(yaml)"]


# ---------------------------------------------------------------------------------------------
# Locks while locking, schemas, robustness


def test_require_locks_false_tolerates_missing_and_invalid_locks(repo: Path) -> None:
    write(repo, "locks/bad.torrent", "garbage")
    write(repo, "d.yaml", """
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: missing}
        spec: {version: "1", source: {file: {path: /x}}, placement: {all: true}, path: a,
               lock: locks/missing.torrent}
        ---
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: bad}
        spec: {version: "1", source: {file: {path: /x}}, placement: {all: true}, path: b,
               lock: locks/bad.torrent}
        """)
    assert len(errors(repo)) == 2
    state = load_desired_state(repo, "r", require_locks=False)
    assert isinstance(state, DesiredState)
    assert state.datasets["missing"].lock is None and state.datasets["bad"].lock is None


def test_require_locks_false_still_rejects_a_lock_outside_the_repo(repo: Path) -> None:
    dataset_with(repo, "placement: {all: true}\nlock: ../../evil.torrent\n")
    result = load_desired_state(repo, "r", require_locks=False)
    assert isinstance(result, list)
    assert [(e.field, "outside the state repo" in e.message) for e in result] == [
        ("spec.lock", True)]


def test_schemas_are_valid_and_accept_the_documented_examples() -> None:
    import jsonschema

    from reconciler.desired.schemas import schema, validator

    for name in ("node", "dataset", "config", "status"):
        s = schema(name)
        jsonschema.Draft202012Validator.check_schema(s)
        assert s["$id"] == f"https://syncbit.dev/schemas/{name}.schema.json"
        assert schema(f"{name}.schema.json") is s
    config = {"node": "gpu-01", "desiredState": "/srv/syncbit-state",
              "stateDir": "/var/lib/syncbit",
              "statusFile": "/var/lib/syncbit/status.json",
              "metricsFile": "/var/lib/syncbit/syncbit.prom", "allowedRoots": ["/data"],
              "listen": {"peer": "0.0.0.0:6881", "api": "127.0.0.1:7070"},
              "cache": {"limit": "2TiB"}, "bandwidth": {"download": 0, "upload": "200MiB",
                                                        "origin": 0},
              "gracePeriod": "10m"}
    assert list(validator("config").iter_errors(config)) == []
    assert [e.message for e in validator("config").iter_errors(dict(config, gracePeriod="soon"))]
    assert list(validator("config").iter_errors(dict(config, extra=1)))
    status = {
        "apiVersion": "syncbit/v1", "kind": "NodeStatus", "node": "gpu-01",
        "observedRevision": "abc", "lastAppliedRevision": "abc",
        "rejected": {"revision": "def", "errors": [
            {"file": "d.yaml", "line": 3, "col": 9, "field": "spec.path", "message": "m"}]},
        "lastPass": {"startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:05Z",
                     "result": "Rejected"},
        "conditions": [{"type": "Ready", "status": "False", "reason": "RevisionRejected",
                        "message": "m", "lastTransitionTime": "2026-01-01T00:00:05Z"}],
        "datasets": {"llama": {"phase": "Fetching", "version": "3.1", "path": "/data/llama",
                               "infoHash": None, "bytesTotal": 10, "bytesDone": 5,
                               "bytesFromOrigin": 1, "bytesFromPeers": 4, "downloadRate": 2.5,
                               "uploadRate": 0, "peers": 2, "error": None}}}
    assert list(validator("status").iter_errors(status)) == []
    bad = dict(status, lastPass=dict(status["lastPass"], result="Done"))
    assert list(validator("status").iter_errors(bad))


_VOCAB = ["apiVersion", "kind", "metadata", "name", "labels", "spec", "peer", "api", "capacity",
          "version", "source", "http", "s3", "hf", "file", "baseUrl", "files", "urls", "headers",
          "bucket", "keys", "prefix", "repo", "path", "placement", "nodes", "replicas", "all",
          "selector", "lock", "mirrors", "priority", "keepVersions", "suspend", "x"]
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=False),
                     st.sampled_from(["syncbit/v1", "Node", "Dataset", "gpu-01", "../x", "/abs",
                                      "${X}", "$", "2TiB", "h:1", "https://h/a", "", "a//b"]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(_VOCAB), inner, max_size=4)), max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(st.dictionaries(st.sampled_from(_VOCAB), _values, max_size=5), max_size=3))
def test_arbitrary_documents_never_raise(tmp_path: Path, docs: list[dict]) -> None:
    import io
    import uuid

    from ruamel.yaml import YAML

    root = tmp_path / uuid.uuid4().hex
    root.mkdir()
    buf = io.StringIO()
    YAML(typ="safe", pure=True).dump_all(docs, buf)
    (root / "x.yaml").write_text(buf.getvalue())
    result = load_desired_state(root, "r")
    assert isinstance(result, (DesiredState, list))
    if isinstance(result, list):
        for e in result:
            assert isinstance(e, ValidationError) and e.line >= 1 and e.col >= 1 and e.message


def test_validation_is_pure_over_documents_and_lock_bytes() -> None:
    """No state repo on disk: the documents and the locks' bytes are all validation sees."""
    from factories import torrent
    from reconciler.desired.loader import LockRead, parse_documents
    from reconciler.desired.validate import validate_documents

    text = textwrap.dedent("""\
        apiVersion: syncbit/v1
        kind: Node
        metadata: {name: n1}
        spec: {peer: "127.0.0.1:6881", api: "127.0.0.1:7070"}
        ---
        apiVersion: syncbit/v1
        kind: Dataset
        metadata: {name: x}
        spec:
          version: v1
          source: {file: {path: /src/x}}
          placement: {all: true}
          path: ds/x
          lock: locks/x.torrent
        """)
    docs, problems = parse_documents(text, "state.yaml")
    assert problems == []
    good = validate_documents(docs, {"locks/x.torrent": LockRead(data=torrent("x"))}, "r1")
    assert isinstance(good, DesiredState) and good.datasets["x"].lock is not None
    missing = validate_documents(docs, {"locks/x.torrent": LockRead(problem="missing")}, "r1")
    assert isinstance(missing, list) and "does not exist" in missing[0].message
    assert missing[0].field == "spec.lock" and missing[0].file == "state.yaml"
    unreadable = validate_documents(
        docs, {"locks/x.torrent": LockRead(problem="unreadable", detail="permission denied")}, "r1")
    assert isinstance(unreadable, list)
    assert "cannot read lock 'locks/x.torrent': permission denied" in unreadable[0].message


SPLIT = """
    apiVersion: syncbit/v1
    kind: Dataset
    metadata: {name: d}
    spec:
      version: "1"
      source: {file: {path: /nfs/x}}
      placement: {all: true}
      path: x
      split: SPLIT
    """


def test_split_copies_reaches_the_model(repo: Path) -> None:
    write(repo, "d.yaml", SPLIT.replace("SPLIT", "{copies: 2}"))
    assert load(repo).datasets["d"].split == 2
    write(repo, "d.yaml", SPLIT.replace("      split: SPLIT\n", ""))
    assert load(repo).datasets["d"].split is None


@pytest.mark.parametrize("value, field", [
    ("{copies: 0}", "spec.split.copies"), ("{copies: -1}", "spec.split.copies"),
    ("{copies: two}", "spec.split.copies"), ("{}", "spec.split.copies"),
    ("{copies: 1, spread: 2}", "spec.split.spread"), ("3", "spec.split")])
def test_split_must_be_copies_of_at_least_one(repo: Path, value: str, field: str) -> None:
    write(repo, "d.yaml", SPLIT.replace("SPLIT", value))
    error = only_error(repo)
    assert (error.file, error.line, error.field) == ("d.yaml", 9, field), str(error)


# ---------------------------------------------------------------------------------------------
# node: sources (published from a node's disk)


def test_node_source_builds_the_model(repo: Path) -> None:
    dataset_source(repo, """
        source:
          node: {name: gpu-01, path: /data/ckpt/step-1200}
        """)
    state = load_desired_state(repo, "r")
    assert isinstance(state, DesiredState)
    assert state.datasets["d"].source == NodeSource(name="gpu-01", path="/data/ckpt/step-1200")


def test_node_source_names_an_unknown_node(repo: Path) -> None:
    dataset_source(repo, """
        source:
          node: {name: gpu-09, path: /data/ckpt/step-1200}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.col, error.field) == (
        "d.yaml", 9, 18, "spec.source.node.name")
    assert error.message.startswith("unknown node 'gpu-09': no Node document has this name")


def test_node_source_path_must_be_absolute(repo: Path) -> None:
    dataset_source(repo, """
        source:
          node: {name: gpu-01, path: ckpt/step-1200}
        """)
    error = only_error(repo)
    assert (error.file, error.line, error.field) == ("d.yaml", 9, "spec.source.node.path")
    assert "must be an absolute path on the publishing node" in error.message


def test_node_source_needs_name_and_path(repo: Path) -> None:
    dataset_source(repo, """
        source:
          node: {path: /data/ckpt}
        """)
    error = only_error(repo)
    assert (error.line, error.field) == (9, "spec.source.node.name")


def test_node_source_has_no_mirrors(repo: Path) -> None:
    dataset_source(repo, """
        source:
          node: {name: gpu-01, path: /data/ckpt}
        mirrors:
          - http: {urls: ["http://127.0.0.1/x.bin"]}
        """)
    error = only_error(repo)
    assert (error.line, error.field) == (10, "spec.mirrors")
    assert "no external origin" in error.message
