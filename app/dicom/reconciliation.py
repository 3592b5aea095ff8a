"""Import Reconciliation (the IHE Radiology Import Reconciliation Workflow, IRWF.b): a foreign
CD's instances made the local patient's, keeping what they said before.

What :func:`reconcile` changes in a data set, and nothing else:

- **Issuer of Patient ID (0010,0021)**, when the coercion names an issuer and the instance
  has none (empty or absent): set to it, so that the foreign Patient ID, kept below, says
  whose number it is.
- **Patient ID (0010,0020)**, **Patient's Name (0010,0010)**, **Patient's Birth Date
  (0010,0030)**: set to the given local values, each only when given and different.
- **Other Patient IDs Sequence (0010,1002)** (PS3.3 C.7.1.1): when the Patient ID
  changes, an item with the foreign Patient ID, its Issuer of Patient ID (as it is after
  the first rule) and Type of Patient ID "TEXT" is appended, after the items it had: the
  foreign identity stays with the instance.
- **Original Attributes Sequence (0400,0561)** (PS3.3 C.12.1, SOP Common): one item is
  appended, with Attribute Modification DateTime (0400,0562), Modifying System
  (0400,0563), Source of Previous Values (0400,0564: the sending institution when known),
  Reason for the Attribute Modification (0400,0565) "COERCE" (the values were changed to
  those of the receiving archive), and Modified Attributes Sequence
  (0400,0550) holding the previous value of every attribute changed above. An attribute
  that was absent is recorded with an empty value.

The SOP Instance UID, the study and series UIDs and every other attribute stay as they
were. Pure: a data set in, the same data set changed; the caller writes it out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

#: Modifying System (0400,0563): the archive, as the system that made the change.
MODIFYING_SYSTEM = "FILMLESS"


@dataclass(frozen=True)
class Coercion:
    """The local values to give imported instances; None leaves an attribute as it is."""

    issuer: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    birth_date: str | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.issuer, self.patient_id, self.patient_name, self.birth_date))


def reconcile(dataset: Dataset, coercion: Coercion, when: dt.datetime) -> list[str]:
    """Apply ``coercion`` to ``dataset`` as the module docstring says; the keywords of the
    attributes changed (empty: nothing needed changing, and nothing was added)."""
    previous = Dataset()
    changed: list[str] = []

    def change(keyword: str, value: str) -> None:
        old = dataset.get(keyword)
        if old is not None and str(old) == value:
            return
        element = dataset[keyword] if keyword in dataset else None
        if element is not None:
            previous.add(DataElement(element.tag, element.VR, element.value))
        else:
            setattr(previous, keyword, "")
        setattr(dataset, keyword, value)
        changed.append(keyword)

    if coercion.issuer is not None and not dataset.get("IssuerOfPatientID"):
        change("IssuerOfPatientID", coercion.issuer)
    foreign_id = str(dataset.get("PatientID", ""))
    foreign_issuer = dataset.get("IssuerOfPatientID")
    if coercion.patient_id is not None and coercion.patient_id != foreign_id:
        other = Dataset()
        other.PatientID = foreign_id
        if foreign_issuer:
            other.IssuerOfPatientID = str(foreign_issuer)
        other.TypeOfPatientID = "TEXT"
        if "OtherPatientIDsSequence" in dataset:
            previous.OtherPatientIDsSequence = Sequence(list(dataset.OtherPatientIDsSequence))
            dataset.OtherPatientIDsSequence.append(other)
        else:
            previous.OtherPatientIDsSequence = Sequence()
            dataset.OtherPatientIDsSequence = Sequence([other])
        change("PatientID", coercion.patient_id)
        changed.append("OtherPatientIDsSequence")
    if coercion.patient_name is not None:
        change("PatientName", coercion.patient_name)
    if coercion.birth_date is not None:
        change("PatientBirthDate", coercion.birth_date)
    if not changed:
        return []
    item = Dataset()
    item.AttributeModificationDateTime = when.strftime("%Y%m%d%H%M%S.%f%z")
    item.ModifyingSystem = MODIFYING_SYSTEM
    source = dataset.get("InstitutionName")
    if source:
        item.SourceOfPreviousValues = str(source)[:64]
    else:
        item.SourceOfPreviousValues = ""
    item.ReasonForTheAttributeModification = "COERCE"
    item.ModifiedAttributesSequence = Sequence([previous])
    if "OriginalAttributesSequence" in dataset:
        dataset.OriginalAttributesSequence.append(item)
    else:
        dataset.OriginalAttributesSequence = Sequence([item])
    return changed
