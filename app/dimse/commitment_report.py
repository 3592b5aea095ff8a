"""The N-EVENT-REPORT of a Storage Commitment request (PS3.4 J.3.3): sent after the
N-ACTION's response, on the same association while it is open, else on a new association
to the requesting AE's host and port, proposing the SCP role for the archive (PS3.4
J.3.3, SCP/SCU Role Selection, PS3.7 D.3.3.4)."""

from __future__ import annotations

import logging
import time

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from app.repository.aes import ApplicationEntity
from app.services.commitment import Verdict
from app.settings import Settings

log = logging.getLogger(__name__)

#: PS3.4 J.3.3.1 Event Type IDs: all committed; some failed.
ALL_COMMITTED, SOME_FAILED = 1, 2
#: Seconds to wait after the N-ACTION response before reporting on its association.
_GRACE = 0.5


class Report:
    def __init__(
        self, settings: Settings, ae: ApplicationEntity, transaction_uid: str, verdict: Verdict
    ) -> None:
        self.settings = settings
        self.ae = ae
        self.transaction_uid = transaction_uid
        self.verdict = verdict

    @property
    def event_type(self) -> int:
        return SOME_FAILED if self.verdict.failed else ALL_COMMITTED

    def dataset(self) -> Dataset:
        """The Event Information (PS3.4 Table J.3-2)."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        ds.RetrieveAETitle = self.settings.dicom_ae_title
        if self.verdict.committed:
            ds.ReferencedSOPSequence = [_item(c, i) for c, i in self.verdict.committed]
        if self.verdict.failed:
            failed = []
            for sop_class, uid, reason in self.verdict.failed:
                item = _item(sop_class, uid)
                item.FailureReason = reason
                failed.append(item)
            ds.FailedSOPSequence = failed
        return ds

    def send(self, assoc: Association) -> None:
        """On the request's association if it is still open, else on a new one."""
        # The reactor sends the N-ACTION response first: sending pauses it, and it pauses
        # only between messages. A requestor that does not wait for the report releases
        # at once; a moment's grace tells it from one that waits, so the report does not
        # cross its A-RELEASE-RQ (a P-DATA then is a protocol error, PS3.8 §9.2).
        time.sleep(_GRACE)
        if assoc.is_established and self._send_on(assoc):
            return
        try:
            self._send_new()
        except Exception:
            log.exception("storage commitment report %s could not be sent", self.transaction_uid)

    def _send_on(self, assoc: Association) -> bool:
        try:
            status, _ = assoc.send_n_event_report(
                self.dataset(),
                self.event_type,
                StorageCommitmentPushModel,
                StorageCommitmentPushModelInstance,
            )
        except Exception:
            log.info("storage commitment report not sent on the request's association", exc_info=True)
            return False
        return "Status" in status and int(status.Status) == 0

    def _send_new(self) -> None:
        local = AE(self.settings.dicom_ae_title)
        local.acse_timeout = self.settings.dicom_acse_timeout
        local.dimse_timeout = self.settings.dicom_dimse_timeout
        local.network_timeout = self.settings.dicom_network_timeout
        local.connection_timeout = self.settings.dicom_connection_timeout
        local.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        assoc = local.associate(self.ae.host, self.ae.port, ae_title=self.ae.ae_title, ext_neg=[role])
        if not assoc.is_established:
            log.warning("storage commitment report %s: AE %s did not accept an association",
                        self.transaction_uid, self.ae.ae_title)  # fmt: skip
            return
        try:
            if not self._send_on(assoc):
                log.warning(
                    "storage commitment report %s refused by AE %s", self.transaction_uid, self.ae.ae_title
                )
        finally:
            assoc.release()


def _item(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    return item
