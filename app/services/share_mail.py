"""A share's Access Page sent by email (the console's "send" next to "print").

The secrets are stored only as hashes, so, as for the printed page and its PDF, only
whoever holds them from the creation answer can send them on: they are checked against
the share first. The message carries the link and the access code (that is its point)
but no patient name or birth date: email passes through servers the hospital does not
run, and the physician learns whose images they are once the page is opened.
"""

from __future__ import annotations

from app.repository.shares import ShareRow
from app.security.principal import Principal
from app.services import audit, mail
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.mail import Letter
from app.services.shares import Shares


async def send_access_page(
    archive: Archive,
    shares: Shares,
    by: Principal,
    trail: Trail,
    share_id: str,
    token: str,
    code: str,
    to: str,
    base: str,
) -> ShareRow:
    """Email ``share_id``'s link and code to ``to``, recorded, sent or not; the share."""
    trail.event.share_id = share_id
    async with audit.refusals(archive, trail, "Access Page not emailed: "):
        share = await shares.held(by, share_id, token, code)
        await mail.send(archive.settings, access_page_letter(share, token, code, to, base))
    await audit.commit(archive, trail, 200, f"emailed the Access Page to {to.strip()}")
    return share


def access_page_letter(share: ShareRow, token: str, code: str, to: str, base: str) -> Letter:
    challenge = {
        "birthdate": "You will be asked for the patient's date of birth.\n",
        "pin": "You will be asked for the PIN you were given separately.\n",
    }.get(share.challenge or "", "")
    studies = "1 imaging study" if len(share.studies) == 1 else f"{len(share.studies)} imaging studies"
    text = (
        f"{share.hospital_name or 'The hospital'} has shared {studies} with you"
        f"{' (' + share.recipient + ')' if share.recipient else ''}.\n\n"
        f"Open them in a browser:\n  {base}/s/{token}\n\n"
        f"Or go to {base}/access and type the access code:\n  {code}\n"
        f"{challenge}\n"
        f"For a PACS or viewer, the DICOMweb root is:\n  {base}/share/{token}/dicom-web\n\n"
        f"Available until {share.expires_at.strftime('%d %B %Y, %H:%M UTC')}. Keep this message "
        "private: anyone holding it can see these images until then. The hospital can withdraw "
        "access at any time.\n"
    )
    return Letter(to=to, subject="Medical images shared with you", text=text)
