"""A patient at the portal, for the portal's tests: studies stored for them, an
enrolment code printed by the film library, the emailed sign-in link followed."""

from __future__ import annotations

import re

import httpx

from tests.console.oidc import csrf_of, sign_in
from tests.fixtures import ArchiveUnderTest
from tests.mail.smtp import Mailbox
from tests.samples import make_sample, multipart_body


async def store(archive: ArchiveUnderTest, patient_id: str, description: str, **attributes: str) -> str:
    """A study of ``patient_id``'s, stored; its UID."""
    sample = make_sample(
        "ct",
        PatientID=patient_id,
        PatientName=f"{patient_id}^Pat",
        StudyDescription=description,
        **attributes,
    )
    body, ctype = multipart_body([sample.data])
    stored = await archive.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert stored.status_code == 200, stored.text
    return sample.study


def sign_in_link(box: Mailbox, address: str, n: int) -> str:
    """The sign-in link in the ``n``-th (and last) message to ``address``."""
    messages = box.messages_to(address)
    assert len(messages) == n, f"{len(messages)} messages to {address}, expected {n}"
    found = re.search(r"https?://testserver(/portal/signin/[A-Za-z0-9_-]+)", messages[-1].get_content())
    assert found
    return found.group(1)


async def enrolment_code(
    archive: ArchiveUnderTest, staff: httpx.AsyncClient, study: str, patient_id: str
) -> str:
    """A code printed by a signed-in film library member for ``patient_id``."""
    page = await staff.get(f"/console/studies/{study}")
    printed = await staff.post(
        "/console/enrolment-codes", data={"patient_id": patient_id, "csrf": csrf_of(page.text)}
    )
    assert printed.status_code == 201
    code = re.search(r'<p class="code">([0-9A-Z-]+)</p>', printed.text)
    assert code
    return code.group(1)


async def signed_in_patient(
    archive: ArchiveUnderTest,
    box: Mailbox,
    browser: httpx.AsyncClient,
    study: str,
    patient_id: str,
    address: str,
) -> str:
    """Enrol ``browser`` as ``patient_id`` (who holds ``study``) and sign in; the CSRF
    token of its portal pages."""
    async with httpx.AsyncClient(transport=archive.client._transport, base_url="http://testserver") as staff:
        await sign_in(staff, "alice")
        code = await enrolment_code(archive, staff, study, patient_id)
    before = len(box.messages_to(address))
    assert (await browser.post("/portal/enrol", data={"code": code, "email": address})).status_code == 200
    assert (await browser.post(sign_in_link(box, address, before + 1))).status_code == 303
    return csrf_of((await browser.get("/portal")).text)
