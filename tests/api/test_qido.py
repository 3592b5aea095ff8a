"""QIDO-RS matching, paging and attribute selection (PS3.18 §10.6), over a small corpus
of stored instances with varied attributes."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio

from tests.fixtures import ArchiveUnderTest
from tests.samples import Sample, make_sample, multipart_body

pytestmark = pytest.mark.parametrize("backend", ["filesystem"], indirect=True)


@pytest_asyncio.fixture(loop_scope="session")
async def corpus(client: httpx.AsyncClient) -> dict[str, Sample]:
    """Three studies: two of patient P1 (CT and CT+MR), one of P2 (MR)."""
    common_a = {"PatientID": "P1", "PatientName": "Doe^Jane", "StudyDate": "20240115", "StudyTime": "101500"}
    a1 = make_sample(
        "ct", AccessionNumber="ACC1", Modality="CT", SeriesNumber=1, InstanceNumber=1, **common_a
    )
    a2 = make_sample(
        "ct",
        study=a1.study,
        series=a1.series,
        AccessionNumber="ACC1",
        Modality="CT",
        SeriesNumber=1,
        InstanceNumber=2,
        **common_a,
    )
    b1 = make_sample(
        "ct",
        PatientID="P1",
        PatientName="Doe^Jane",
        StudyDate="20240620",
        StudyTime="230000",
        AccessionNumber="ACC2",
        Modality="CT",
        SeriesNumber=1,
        StudyDescription="Chest",
    )
    b2 = make_sample(
        "mr",
        study=b1.study,
        PatientID="P1",
        PatientName="Doe^Jane",
        StudyDate="20240620",
        AccessionNumber="ACC2",
        Modality="MR",
        SeriesNumber=2,
    )
    c1 = make_sample(
        "mr",
        PatientID="P2",
        PatientName="Smith^John^^Dr",
        StudyDate="20231231",
        StudyTime="0800",
        AccessionNumber="ACC3",
        Modality="MR",
        ReferringPhysicianName="House^Gregory",
    )
    samples = {"a1": a1, "a2": a2, "b1": b1, "b2": b2, "c1": c1}
    body, ctype = multipart_body(s.data for s in samples.values())
    response = await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert response.status_code == 200, response.text
    return samples


async def _search(client: httpx.AsyncClient, path: str, **params: object) -> list[dict]:
    response = await client.get(f"/dicom-web/{path}", params=params)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    return response.json()


def _values(matches: list[dict], tag: str) -> list[object]:
    return [m[tag]["Value"][0] if "Value" in m[tag] else None for m in matches]


def _uids(matches: list[dict], tag: str = "0020000D") -> set[str]:
    return {m[tag]["Value"][0] for m in matches}


async def test_all_studies_with_default_attributes(client, corpus):
    matches = await _search(client, "studies")
    assert _uids(matches) == {corpus["a1"].study, corpus["b1"].study, corpus["c1"].study}
    study_b = next(m for m in matches if m["0020000D"]["Value"][0] == corpus["b1"].study)
    assert study_b["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert study_b["00100020"]["Value"] == ["P1"]
    assert study_b["00080020"] == {"vr": "DA", "Value": ["20240620"]}
    assert sorted(study_b["00080061"]["Value"]) == ["CT", "MR"]
    assert study_b["00201206"] == {"vr": "IS", "Value": [2]}
    assert study_b["00201208"] == {"vr": "IS", "Value": [2]}
    assert study_b["00080056"]["Value"] == ["ONLINE"]
    assert study_b["00081190"]["Value"] == [f"http://testserver/dicom-web/studies/{corpus['b1'].study}"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"PatientID": "P1"}, {"a1", "b1"}),
        ({"00100020": "P2"}, {"c1"}),
        ({"AccessionNumber": "ACC2"}, {"b1"}),
        ({"PatientName": "Doe*"}, {"a1", "b1"}),
        ({"PatientName": "doe^jane"}, {"a1", "b1"}),
        ({"PatientName": "*jOhN*"}, {"c1"}),
        ({"PatientName": "Smit?^John^^Dr"}, {"c1"}),
        ({"StudyDate": "20240115"}, {"a1"}),
        ({"StudyDate": "20240101-20241231"}, {"a1", "b1"}),
        ({"StudyDate": "-20240115"}, {"a1", "c1"}),
        ({"StudyDate": "20240116-"}, {"b1"}),
        ({"StudyTime": "0800-1100"}, {"a1", "c1"}),
        ({"StudyTime": "10"}, {"a1"}),
        ({"ModalitiesInStudy": "MR"}, {"b1", "c1"}),
        ({"ModalitiesInStudy": "CT,MR"}, {"a1", "b1", "c1"}),
        ({"StudyDescription": "Chest"}, {"b1"}),
        ({"ReferringPhysicianName": "House*"}, {"c1"}),
        ({"PatientID": "P1", "ModalitiesInStudy": "MR"}, {"b1"}),
        ({"PatientID": "nobody"}, set()),
    ],
)
async def test_study_matching(client, corpus, params, expected):
    matches = await _search(client, "studies", **params)
    assert _uids(matches) == {corpus[k].study for k in expected}


async def test_uid_list_matching(client, corpus):
    uids = f"{corpus['a1'].study},{corpus['c1'].study}"
    assert _uids(await _search(client, "studies", StudyInstanceUID=uids)) == {
        corpus["a1"].study,
        corpus["c1"].study,
    }
    response = await client.get(
        "/dicom-web/studies",
        params=[("StudyInstanceUID", corpus["a1"].study), ("StudyInstanceUID", corpus["b1"].study)],
    )
    assert _uids(response.json()) == {corpus["a1"].study, corpus["b1"].study}


async def test_fuzzy_matching_matches_any_name_component_prefix(client, corpus):
    assert _uids(await _search(client, "studies", PatientName="jo", fuzzymatching="true")) == {
        corpus["c1"].study
    }
    assert _uids(await _search(client, "studies", PatientName="jo", fuzzymatching="false")) == set()


async def test_series_and_instance_levels(client, corpus):
    series = await _search(client, f"studies/{corpus['b1'].study}/series")
    assert sorted(_values(series, "00080060")) == ["CT", "MR"]
    assert all(m["0020000D"]["Value"] == [corpus["b1"].study] for m in series)
    assert all(m["00201209"]["Value"] == [1] for m in series)
    assert "00100020" not in series[0]  # the study is fixed by the path

    everywhere = await _search(client, "series", Modality="MR")
    assert _uids(everywhere, "0020000E") == {corpus["b2"].series, corpus["c1"].series}
    assert "00100020" in everywhere[0]  # not scoped: the study's attributes come too

    instances = await _search(client, f"studies/{corpus['a1'].study}/series/{corpus['a1'].series}/instances")
    assert _values(instances, "00200013") == [1, 2]  # ordered by Instance Number
    assert _uids(instances, "00080018") == {corpus["a1"].instance, corpus["a2"].instance}
    assert instances[0]["00280010"] == {"vr": "US", "Value": [128]}
    url = instances[0]["00081190"]["Value"][0]
    assert url.endswith(
        f"/studies/{corpus['a1'].study}/series/{corpus['a1'].series}/instances/{corpus['a1'].instance}"
    )

    study_instances = await _search(client, f"studies/{corpus['b1'].study}/instances")
    assert _uids(study_instances, "00080018") == {corpus["b1"].instance, corpus["b2"].instance}
    assert all("0020000E" in m for m in study_instances)


async def test_relational_queries(client, corpus):
    series = await _search(client, "series", PatientID="P2")
    assert _uids(series, "0020000E") == {corpus["c1"].series}
    instances = await _search(client, "instances", StudyDate="20240620", Modality="CT")
    assert _uids(instances, "00080018") == {corpus["b1"].instance}
    instance = await _search(client, "instances", SOPInstanceUID=corpus["a2"].instance)
    assert _uids(instance, "00080018") == {corpus["a2"].instance}


async def test_includefield_keywords_tags_lists_and_repeats(client, corpus):
    response = await client.get(
        "/dicom-web/studies",
        params=[
            ("PatientID", "P2"),
            ("includefield", "00100040,PatientBirthDate"),
            ("includefield", "00180050"),
        ],
    )
    (match,) = response.json()
    assert "00100040" in match and "00100030" in match
    # Not indexed: taken from the stored instance's own attributes.
    assert match["00180050"]["vr"] == "DS"
    assert "Value" in match["00180050"]


async def test_universal_matching_returns_the_attribute(client, corpus):
    (match,) = await _search(client, "studies", PatientID="P2", PatientSex="")
    assert "00100040" in match


async def test_paging_is_stable_and_warns_when_truncated(client, corpus):
    seen: list[str] = []
    for offset in range(3):
        response = await client.get("/dicom-web/studies", params={"limit": 1, "offset": offset})
        page = response.json()
        assert len(page) == 1
        seen.append(page[0]["0020000D"]["Value"][0])
        if offset < 2:
            assert response.headers["warning"].startswith("299 ")
        else:
            assert "warning" not in response.headers
    assert len(set(seen)) == 3
    assert await _search(client, "studies", limit=5, offset=3) == []


async def test_limit_above_the_maximum_is_clamped_with_a_warning(served: ArchiveUnderTest, corpus):
    response = await served.client.get("/dicom-web/studies", params={"limit": 10**6})
    assert response.status_code == 200
    assert len(response.json()) == 3
    assert "warning" in response.headers


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"StudyDate": "2024-01-01"}, "StudyDate"),
        ({"StudyDate": "20241301"}, "StudyDate"),
        ({"StudyDate": "20240201-20240101"}, "StudyDate"),
        ({"StudyTime": "2561"}, "StudyTime"),
        ({"StudyInstanceUID": "1.2.abc"}, "StudyInstanceUID"),
        ({"limit": "-1"}, "limit"),
        ({"offset": "x"}, "offset"),
        ({"fuzzymatching": "maybe"}, "fuzzymatching"),
        ({"NoSuchKeyword": "1"}, "NoSuchKeyword"),
        ({"SeriesInstanceUID": "1.2"}, "SeriesInstanceUID"),
        ({"PatientAge": "040Y"}, "PatientAge"),
        ({"includefield": "Bogus"}, "includefield"),
        ({"PatientID": ["a", "b"]}, "PatientID"),
    ],
)
async def test_invalid_parameters_are_400_naming_the_parameter(client, corpus, params, named):
    response = await client.get("/dicom-web/studies", params=params)
    assert response.status_code == 400
    assert named in response.json()["message"]


async def test_series_attribute_in_instance_query_but_not_above(client, corpus):
    assert (await client.get("/dicom-web/instances", params={"Modality": "CT"})).status_code == 200
    assert (await client.get("/dicom-web/studies", params={"Modality": "CT"})).status_code == 400


async def test_accept_negotiation(client, corpus):
    ok = await client.get("/dicom-web/studies", headers={"Accept": "application/json"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/json")
    weighted = await client.get(
        "/dicom-web/studies", headers={"Accept": "application/json;q=0.5, application/dicom+json"}
    )
    assert weighted.headers["content-type"].startswith("application/dicom+json")
    refused = await client.get(
        "/dicom-web/studies", headers={"Accept": "multipart/related; type=application/dicom+xml"}
    )
    assert refused.status_code == 406


async def test_unknown_study_path_gives_empty_results(client, corpus):
    assert await _search(client, "studies/1.2.3.4/series") == []


async def test_names_match_without_case_or_accents(client):
    zoe = make_sample("ct", PatientID="ACCENT", PatientName="Müller^Zoë")
    body, ctype = multipart_body([zoe.data])
    assert (
        await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    ).status_code == 200
    for params in (
        {"PatientName": "muller^zoe"},
        {"PatientName": "MÜLL*"},
        {"PatientName": "*zoe"},
        {"PatientName": "zo", "fuzzymatching": "true"},
        {"PatientName": "MULLER", "fuzzymatching": "true"},
    ):
        assert _uids(await _search(client, "studies", **params)) == {zoe.study}, params
    (match,) = await _search(client, "studies", PatientID="ACCENT")
    assert match["00100010"]["Value"] == [{"Alphabetic": "Müller^Zoë"}]  # returned as stored


async def test_includefield_all_returns_each_levels_attributes(client, corpus):
    (study,) = await _search(client, "studies", PatientID="P2", includefield="all")
    assert "00101010" in study or "00100030" in study  # patient attributes
    assert "00080060" not in study  # Modality is a series attribute
    assert "00080018" not in study  # SOP Instance UID is an instance attribute
    (series,) = await _search(client, f"studies/{corpus['c1'].study}/series", includefield="all")
    assert "00080070" in series  # Manufacturer (General Equipment, a series-level module)
    assert "00080018" not in series
    (instance,) = await _search(
        client, f"studies/{corpus['c1'].study}/series/{corpus['c1'].series}/instances", includefield="all"
    )
    assert "00180050" in instance and "00280030" in instance  # SliceThickness, PixelSpacing
    assert "7FE00010" not in instance  # never bulk data
    assert all("BulkDataURI" not in v for v in instance.values())


async def test_includefield_of_a_lower_level_comes_from_the_stored_instance(client, corpus):
    """OHIF's study list asks for Modality (a series attribute) at study level."""
    params = {"includefield": "00081030,00080060,00080090,00100030", "limit": 101, "fuzzymatching": "false"}
    matches = await _search(client, "studies", **params)
    assert len(matches) == 3
    assert all(m["00080060"]["Value"][0] in ("CT", "MR") for m in matches)
    (series,) = await _search(
        client, "series", SeriesInstanceUID=corpus["c1"].series, includefield="00200013"
    )
    assert series["00200013"]["Value"] == [int(corpus["c1"].dataset.InstanceNumber)]
