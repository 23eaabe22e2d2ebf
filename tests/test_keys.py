"""Table-driven tests of S3 key classification (trailproc._pipeline.keys)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest

from trailproc._pipeline.keys import FileRef, KeyInfo, ObjectKind, classify_key

UTC = dt.timezone.utc
ACCT = "111122223333"
LOG_NAME = f"{ACCT}_CloudTrail_us-east-2_20150801T0210Z_Mu0KsOhtH1ar15ZZ.json.gz"
LOG_DIR = f"AWSLogs/{ACCT}/CloudTrail/us-east-2/2015/08/01/"


def _case(key: str, kind: ObjectKind, id: str, **expected: Any) -> Any:
    return pytest.param(key, kind, expected, id=id)


CASES = [
    _case(
        LOG_DIR + LOG_NAME,
        ObjectKind.LOG,
        "log",
        account_id=ACCT,
        region="us-east-2",
        org_id=None,
        prefix=None,
        date=dt.date(2015, 8, 1),
        delivered_at=dt.datetime(2015, 8, 1, 2, 10, tzinfo=UTC),
        trail_name=None,
    ),
    _case(
        f"AWSLogs/o-aa111bb222/{ACCT}/CloudTrail/us-east-2/2015/08/01/" + LOG_NAME,
        ObjectKind.LOG,
        "org-trail-log",
        account_id=ACCT,
        org_id="o-aa111bb222",
        prefix=None,
        region="us-east-2",
    ),
    _case(
        "security/trails/prod/" + LOG_DIR + LOG_NAME,
        ObjectKind.LOG,
        "prefix-with-slashes",
        prefix="security/trails/prod",
        account_id=ACCT,
        org_id=None,
    ),
    _case(
        f"logs/AWSLogs/o-exampleorgid/{ACCT}/CloudTrail/us-east-2/2015/08/01/" + LOG_NAME,
        ObjectKind.LOG,
        "prefix-and-org",
        prefix="logs",
        org_id="o-exampleorgid",
        account_id=ACCT,
    ),
    _case(
        LOG_DIR + f"{ACCT}_CloudTrail_us-east-2_20150801T0210ZMu0KsOhtH1ar15ZZ.json.gz",
        ObjectKind.LOG,
        "no-underscore-before-unique",
        account_id=ACCT,
        delivered_at=dt.datetime(2015, 8, 1, 2, 10, tzinfo=UTC),
    ),
    _case(
        LOG_DIR + LOG_NAME.removesuffix(".gz"),
        ObjectKind.LOG,
        "uncompressed-json",
        account_id=ACCT,
        delivered_at=dt.datetime(2015, 8, 1, 2, 10, tzinfo=UTC),
    ),
    _case(
        LOG_DIR + "sanitised-fixture.json.gz",
        ObjectKind.LOG,
        "loose-file-name-still-log",
        account_id=ACCT,
        region="us-east-2",
        date=dt.date(2015, 8, 1),
        delivered_at=None,
    ),
    _case(
        f"AWSLogs/{ACCT}/CloudTrail/us-east-2/2015/13/45/" + LOG_NAME,
        ObjectKind.LOG,
        "impossible-date-folder",
        date=None,
        delivered_at=dt.datetime(2015, 8, 1, 2, 10, tzinfo=UTC),
    ),
    _case(
        "AWSLogs/123456789012/CloudTrail-Insight/us-east-1/2024/01/01/"
        "123456789012_CloudTrail-Insight_us-east-1_20240101T0105Z_AbCdEf0123456789.json.gz",
        ObjectKind.INSIGHT,
        "insights",
        account_id="123456789012",
        region="us-east-1",
        date=dt.date(2024, 1, 1),
        delivered_at=dt.datetime(2024, 1, 1, 1, 5, tzinfo=UTC),
    ),
    _case(
        "p/AWSLogs/o-aa111bb222/123456789012/CloudTrail-Insight/eu-west-1/2024/02/29/"
        "123456789012_CloudTrail-Insight_eu-west-1_20240229T2355Z_AbCdEf0123456789.json.gz",
        ObjectKind.INSIGHT,
        "insights-org-prefix",
        prefix="p",
        org_id="o-aa111bb222",
        date=dt.date(2024, 2, 29),
    ),
    _case(
        "AWSLogs/111111111111/CloudTrail-Digest/us-east-2/2015/09/01/111111111111_CloudTrail-"
        "Digest_us-east-2_example-trail-name_us-east-2_20150901T201728Z.json.gz",
        ObjectKind.DIGEST,
        "digest-guide-example",
        account_id="111111111111",
        region="us-east-2",
        trail_name="example-trail-name",
        home_region="us-east-2",
        date=dt.date(2015, 9, 1),
        delivered_at=dt.datetime(2015, 9, 1, 20, 17, 28, tzinfo=UTC),
    ),
    _case(
        f"AWSLogs/{ACCT}/CloudTrail-Digest/eu-west-1/2024/03/05/"
        f"{ACCT}_CloudTrail-Digest_eu-west-1_my_org_trail_us-east-1_20240305T100000Z.json.gz",
        ObjectKind.DIGEST,
        "digest-underscores-multi-region",
        region="eu-west-1",
        trail_name="my_org_trail",
        home_region="us-east-1",
    ),
    _case(
        f"AWSLogs/{ACCT}/CloudTrail-Digest/ap-southeast-2/2024/03/05/"
        f"{ACCT}_CloudTrail-Digest_ap-southeast-2_trail_us-west-2_us-gov-west-1_"
        "20240305T100000Z.json.gz",
        ObjectKind.DIGEST,
        "digest-trail-name-ending-like-a-region",
        region="ap-southeast-2",
        trail_name="trail_us-west-2",
        home_region="us-gov-west-1",
    ),
    _case(
        f"pre/fix/AWSLogs/o-aa111bb222/{ACCT}/CloudTrail-Digest/us-east-1/2024/03/05/"
        f"{ACCT}_CloudTrail-Digest_us-east-1_t.1-a_us-east-1_20240305T100000Z.json.gz",
        ObjectKind.DIGEST,
        "digest-org-prefix",
        prefix="pre/fix",
        org_id="o-aa111bb222",
        trail_name="t.1-a",
    ),
    _case(f"AWSLogs/{ACCT}/Config/ConfigWritabilityCheckFile", ObjectKind.OTHER, "config-check"),
    _case(f"AWSLogs/{ACCT}/CloudTrail/", ObjectKind.OTHER, "folder-marker"),
    _case(LOG_DIR, ObjectKind.OTHER, "date-folder-marker"),
    _case(
        f"AWSLogs/{ACCT}/CloudTrail-Lake/Query/2024/01/01/abc-123/result_1.csv.gz",
        ObjectKind.OTHER,
        "lake-query-result",
    ),
    _case(
        f"AWSLogs/{ACCT}/elasticloadbalancing/us-east-1/2024/01/01/"
        f"{ACCT}_elasticloadbalancing_us-east-1_app.x_20240101T0000Z_10.0.0.1_abc.log.gz",
        ObjectKind.OTHER,
        "load-balancer-log",
    ),
    _case(LOG_DIR + LOG_NAME.replace(".json.gz", ".txt"), ObjectKind.OTHER, "wrong-extension"),
    _case(LOG_NAME, ObjectKind.OTHER, "bare-file-name-without-layout"),
    _case("test.pdf", ObjectKind.OTHER, "unrelated-object"),
    _case(
        f"AWSLogs/{ACCT}/CloudTrail-Digest/us-east-1/2024/03/05/"
        f"{ACCT}_CloudTrail-Digest_us-east-1_a/b_us-east-1_20240305T100000Z.json.gz",
        ObjectKind.OTHER,
        "digest-trail-name-with-slash",
    ),
]


@pytest.mark.parametrize(("key", "kind", "expected"), CASES)
def test_classify_key(key: str, kind: ObjectKind, expected: dict[str, Any]) -> None:
    info = classify_key(key)
    assert info.kind is kind
    for name, value in expected.items():
        assert getattr(info, name) == value, name
    if kind is ObjectKind.OTHER:
        # Nothing is guessed for keys outside the layout.
        assert info == KeyInfo(ObjectKind.OTHER)
    if info.delivered_at is not None:
        assert info.delivered_at.tzinfo is not None
        assert info.delivered_at.utcoffset() == dt.timedelta(0)


def test_file_ref_of_classifies_and_normalises_etag() -> None:
    ref = FileRef.of("bucket", LOG_DIR + LOG_NAME, etag='"0123abc"', size=10, version_id="v1")
    assert ref.kind is ObjectKind.LOG
    assert ref.info == classify_key(LOG_DIR + LOG_NAME)
    assert ref.etag == "0123abc"
    assert (ref.size, ref.version_id) == (10, "v1")
    assert ref.uri == f"s3://bucket/{LOG_DIR}{LOG_NAME}"
    assert FileRef("b", "k").kind is ObjectKind.OTHER
    assert FileRef.of("b", "k", etag=None).etag is None


_CORPUS_LOG_NAME = re.compile(
    r"^(?P<acct>\d{12})_CloudTrail_(?P<region>[a-z0-9-]+)_(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})T"
)


def test_corpus_log_file_names_classify_as_log(corpus: Path) -> None:
    names = sorted({p.name for p in corpus.rglob("*_CloudTrail_*.json.gz")})
    assert names, "no *_CloudTrail_*.json.gz files in the corpus"
    for name in names:
        m = _CORPUS_LOG_NAME.match(name)
        assert m, name
        folder = f"AWSLogs/{m['acct']}/CloudTrail/{m['region']}/{m['y']}/{m['m']}/{m['d']}/"
        info = classify_key(folder + name)
        assert info.kind is ObjectKind.LOG, name
        assert (info.account_id, info.region) == (m["acct"], m["region"]), name
        assert info.date == dt.date(int(m["y"]), int(m["m"]), int(m["d"])), name
        # The strict pattern (not the loose fallback) must match real names.
        assert info.delivered_at is not None, name
        assert info.delivered_at.date() == info.date, name
