"""The console's regional look-up: a reader with the regional role finds one patient's
studies at every member hospital (named by ID with issuer, or exact name with birth
date) and opens another member's study from it; a broader query, or a reader without the
role, stays refused; each look-up is recorded with the hospitals whose data it touched."""

from __future__ import annotations

import re

import pytest

from tests.console.conftest import browser_at
from tests.console.oidc import PROVIDER_WARNINGS, sign_in
from tests.fixtures import OTHER_HOSPITAL, ArchiveUnderTest
from tests.samples import make_sample, multipart_body

pytestmark = pytest.mark.filterwarnings(PROVIDER_WARNINGS)

PATIENT = {"PatientID": "REG-1", "IssuerOfPatientID": "REGION"}


async def _store(archive: ArchiveUnderTest, hospital: str | None, description: str) -> str:
    sample = make_sample(
        "ct", PatientName="Region^Rosa", PatientBirthDate="19660606", StudyDescription=description, **PATIENT
    )
    body, ctype = multipart_body([sample.data])
    client = archive.client if hospital is None else archive.as_user(hospital=hospital, roles=["uploader"])
    stored = await client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert stored.status_code == 200, stored.text
    return sample.study


async def test_a_regional_reader_finds_a_patient_at_every_member(console: ArchiveUnderTest):
    ours = await _store(console, None, "CT here")
    theirs = await _store(console, OTHER_HOSPITAL, "CT there")
    pool = console.app.state.running.archive.pool
    since = await pool.fetchval("SELECT coalesce(max(pk), 0) FROM audit_events")
    async with browser_at(console) as browser:
        await sign_in(browser, "reggie")
        assert 'href="/console/regional"' in (await browser.get("/console")).text
        form = await browser.get("/console/regional")
        assert form.status_code == 200
        for key in ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate"):
            assert f'<label for="{key}">' in form.text
        found = await browser.get("/console/regional", params=PATIENT)
        assert found.status_code == 200 and "CT here" in found.text and "CT there" in found.text
        assert "Other hospital" in found.text
        by_name = await browser.get(
            "/console/regional", params={"PatientName": "Region^Rosa", "PatientBirthDate": "19660606"}
        )
        assert "CT here" in by_name.text and "CT there" in by_name.text
        # A bare ID could be another hospital's different patient: refused, not narrowed.
        broad = await browser.get("/console/regional", params={"PatientID": "REG-1"})
        assert broad.status_code == 400 and "CT" not in broad.text.split("</form>")[1]
        # The other member's study opens from the look-up, thumbnails included.
        link = re.search(rf'href="(/console/studies/{re.escape(theirs)}\?[^"]+)"', found.text)
        assert link
        page = await browser.get(link.group(1).replace("&amp;", "&"))
        assert page.status_code == 200 and "CT there" in page.text
        thumbnails = re.findall(r'src="(/console/studies/[^"]+/thumbnail)"', page.text)
        assert len(thumbnails) == 1
        image = await browser.get(thumbnails[0])
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"
        # Without naming the patient, the other member's study is not there.
        assert (await browser.get(f"/console/studies/{theirs}")).status_code == 404
        assert (await browser.get(f"/console/studies/{ours}")).status_code == 200
    async with browser_at(console) as reader:
        await sign_in(reader, "rita")  # a reader without the regional role
        assert 'href="/console/regional"' not in (await reader.get("/console")).text
        refused = await reader.get("/console/regional", params=PATIENT)
        assert refused.status_code == 403 and "CT there" not in refused.text
        link_page = await reader.get(f"/console/studies/{theirs}", params=PATIENT)
        assert link_page.status_code == 404
    await console.audit_written()
    events = await pool.fetch(
        "SELECT subject, outcome, owner_hospitals, study_uids FROM audit_events "
        "WHERE pk > $1 AND path = '/console/regional' ORDER BY pk",
        since,
    )
    outcomes = [(e["subject"], e["outcome"]) for e in events]
    assert outcomes == [("reggie", 200), ("reggie", 200), ("reggie", 400), ("rita", 403)]
    assert sorted(events[0]["owner_hospitals"]) == sorted(["TEST", OTHER_HOSPITAL])
    assert set(events[0]["study_uids"]) == {ours, theirs}
