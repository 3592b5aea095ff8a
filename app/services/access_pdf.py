"""The printable Access Page as a PDF, for staff who file or forward it rather than print
it from the browser. fpdf2: small, pure Python, no system libraries or headless browser."""

from __future__ import annotations

import io
from typing import Any

import segno
from fpdf import FPDF


def _text(value: object) -> str:
    # The PDF core fonts cover Latin-1 only; anything else is shown as "?" rather than
    # failing the download (the HTML page shows every character).
    return str(value).encode("latin-1", "replace").decode("latin-1")


def access_page_pdf(
    share: Any, studies: list[dict[str, Any]], patient_name: str, hospital_name: str
) -> bytes:
    """``share`` is the creation answer (its secrets included): the same content as the
    HTML page of :func:`app.routers.pages.print_page`."""
    pdf = FPDF(format="A4")
    pdf.set_title("Access to your images")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(0, 12, "Your medical images online", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 12)
    pdf.cell(0, 8, _text(hospital_name), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    facts = [("Patient", patient_name)]
    if share.recipient:
        facts.append(("For", share.recipient))
    facts.append(("Available until", share.expires_at.strftime("%d %B %Y, %H:%M UTC")))
    for label, value in facts:
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(45, 8, _text(label))
        pdf.set_font("Helvetica", "", 12)
        pdf.cell(0, 8, _text(value), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, "Studies", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 12)
    for study in studies:
        line = f"{study['date']} - {study.get('study_description') or 'Imaging study'}"
        pdf.multi_cell(0, 7, _text(line), new_x="LMARGIN", new_y="NEXT")
    qr = io.BytesIO()
    segno.make(share.page_url, error="m").save(qr, kind="png", scale=6)
    qr.seek(0)
    pdf.ln(4)
    pdf.image(qr, w=50)
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, "Open with a phone, or this address:", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Courier", "", 10)
    pdf.multi_cell(0, 6, _text(share.page_url), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, "Or type the access code", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 12)
    pdf.multi_cell(0, 7, _text(f"Go to {share.access_url} and enter:"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Courier", "B", 18)
    pdf.cell(0, 12, _text(share.access_code), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 12)
    if share.challenge == "birthdate":
        pdf.multi_cell(
            0, 7, "You will be asked for the patient's date of birth.", new_x="LMARGIN", new_y="NEXT"
        )
    if share.challenge == "pin":
        pdf.multi_cell(
            0, 7, "You will be asked for the PIN you were given separately.", new_x="LMARGIN", new_y="NEXT"
        )
    pdf.ln(2)
    pdf.multi_cell(
        0,
        7,
        _text(f"DICOMweb root (for a PACS or viewer): {share.dicomweb_root}"),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("Helvetica", "I", 10)
    pdf.multi_cell(
        0, 6, "Keep this page private: anyone holding it can see these images until the date above. "
        "The hospital can withdraw access at any time.", new_x="LMARGIN", new_y="NEXT",
    )  # fmt: skip
    return bytes(pdf.output())
