"""The Brand model: one row, the company the customer knew."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from survey.db import Base

#: The one row's id.
BRAND_ID = 1


class Brand(Base):
    """Who asks the customer: the name, sender, logo and colour they know."""

    __tablename__ = "brand"
    __table_args__ = (CheckConstraint(f"id = {BRAND_ID}", name="one_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The company's name, as its customers know it ("Acme").
    company_name: Mapped[str | None] = mapped_column(String(100))
    #: The email's From name ("Acme Customer Success").
    sender_name: Mapped[str | None] = mapped_column(String(100))
    #: Where the customer's replies to the email go.
    reply_to: Mapped[str | None] = mapped_column(String(320))
    #: The company's site (https), linked from the thanks page and the emails.
    website_url: Mapped[str | None] = mapped_column(String(500))
    #: Buttons, links and focus rings: "#rrggbb", at least 4.5:1 on white.
    accent_color: Mapped[str | None] = mapped_column(String(7))
    #: The logo as served (PNG or JPEG drawn anew at the size shown, or a
    #: checked SVG), its type and its size in pixels (an SVG's viewBox).
    logo: Mapped[bytes | None] = mapped_column(LargeBinary)
    logo_type: Mapped[str | None] = mapped_column(String(20))
    logo_width: Mapped[int | None]
    logo_height: Mapped[int | None]
    updated_at: Mapped[datetime]
    updated_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("staff_users.id", ondelete="SET NULL")
    )
