"""Send mail as the school's one named sender mailbox: `POST /users/{sender}/sendMail`.

As `api-reference/v1.0/api/user-sendmail.md` documents: a JSON `message` (HTML body, To
recipients, file attachments as base64 `contentBytes`), `202 Accepted` with no body on
success. The request is built by msgraph-sdk's request builders and sent through the session
(retries on 429/5xx with Retry-After). Mail.Send is best granted through Exchange RBAC for
Applications scoped to the sender mailbox only (README); such a grant is not in the token, so
no role check happens here: Exchange's answer (403) says whether sending is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgraph.generated.models.attachment import Attachment as GraphAttachment
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.message import Message
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)

from m365guard.errors import GuardError
from m365guard.graph.client import GraphSession
from m365guard.graph.doctor import DoctorCheck
from m365guard.graph.replies import error_code, json_object
from m365guard.graph.settings import ConnectionSettings

# user-post-messages.md: attachments under 3 MB go in the one request; larger need an upload
# session, which m365guard does not need (a week's CSVs are far smaller).
MAX_INLINE_ATTACHMENTS = 3 * 1024 * 1024


@dataclass(frozen=True)
class Attachment:
    """One file attached to a message."""

    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class OutgoingMail:
    """A message from the sender mailbox to some recipients (HTML body)."""

    sender: str
    to: tuple[str, ...]
    subject: str
    html: str
    attachments: tuple[Attachment, ...] = ()


class MailNotSent(Exception):
    """Graph refused or could not take the message; the text says why, for logs and reports."""


def _request_body(mail: OutgoingMail) -> SendMailPostRequestBody:
    attachments: list[GraphAttachment] = []
    for item in mail.attachments:
        attachment = FileAttachment()
        attachment.odata_type = "#microsoft.graph.fileAttachment"
        attachment.name = item.name
        attachment.content_type = item.content_type
        attachment.content_bytes = item.data
        attachments.append(attachment)
    message = Message(
        subject=mail.subject,
        body=ItemBody(content_type=BodyType.Html, content=mail.html),
        to_recipients=[Recipient(email_address=EmailAddress(address=address))
                       for address in mail.to],
        attachments=attachments or None,
    )
    return SendMailPostRequestBody(message=message, save_to_sent_items=True)


def send_mail(session: GraphSession, mail: OutgoingMail) -> None:
    """Send one message; MailNotSent with Graph's code and message if it is not accepted."""
    if not mail.to:
        raise MailNotSent("no recipients")
    size = sum(len(item.data) for item in mail.attachments)
    if size > MAX_INLINE_ATTACHMENTS:
        raise MailNotSent(f"attachments of {size} bytes exceed the 3 MB one request can carry")
    builder = session.client.users.by_user_id(mail.sender).send_mail
    info = builder.to_post_request_information(_request_body(mail))
    try:
        response = session.run(session.send(info))
    except GuardError as exc:
        raise MailNotSent(exc.message) from exc
    if response.status_code == 202:
        return
    code, message = error_code(json_object(response.content))
    raise MailNotSent(f"HTTP {response.status_code} {code}: {message}".strip())


def sending_check(conn: ConnectionSettings, sender: str) -> DoctorCheck:
    """Doctor: send a test message from the sender mailbox to itself."""
    from m365guard.graph.client import open_session

    name = "send mail as " + sender
    mail = OutgoingMail(sender, (sender,), "m365guard doctor: test message",
                        "<p>m365guard can send alerts and the weekly page from this mailbox."
                        "</p>")
    try:
        with open_session(conn) as session:
            send_mail(session, mail)
    except (MailNotSent, GuardError) as exc:
        reason = exc.message if isinstance(exc, GuardError) else str(exc)
        return DoctorCheck(name, False, reason,
                           "grant Application Mail.Send scoped to this mailbox with Exchange "
                           "RBAC for Applications (README: Alerts and the weekly page by mail)")
    return DoctorCheck(name, True, "a test message was accepted (202)")
