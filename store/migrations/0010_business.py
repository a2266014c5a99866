"""Business flows: flow runs, invoices, payments and the blackboard (projections)."""

from typing import Any

import peewee


def up(migrator: Any, db: peewee.Database) -> None:
    class FlowRow(peewee.Model):
        flow_id = peewee.CharField(max_length=32, primary_key=True)
        template = peewee.CharField(max_length=64, index=True)
        status = peewee.CharField(max_length=16, index=True)
        step = peewee.CharField(max_length=64, default="")
        job_id = peewee.CharField(max_length=32, null=True, index=True)
        waiting_for = peewee.CharField(max_length=32, null=True)
        until = peewee.DateTimeField(null=True)
        contact_id = peewee.CharField(max_length=32, null=True, index=True)
        trigger = peewee.CharField(max_length=300)
        context = peewee.TextField(default="{}")
        steps_done = peewee.IntegerField(default=0)
        last_error = peewee.TextField(null=True)
        started_at = peewee.DateTimeField()
        updated_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "flows"

    class InvoiceRow(peewee.Model):
        invoice_id = peewee.CharField(max_length=32, primary_key=True)
        number = peewee.CharField(max_length=32, unique=True)
        contact_id = peewee.CharField(max_length=32, null=True, index=True)
        flow_id = peewee.CharField(max_length=32, null=True)
        job_id = peewee.CharField(max_length=32, null=True)
        currency = peewee.CharField(max_length=3)
        total = peewee.CharField(max_length=32)
        issue_date = peewee.CharField(max_length=10)
        due_date = peewee.CharField(max_length=10, index=True)
        status = peewee.CharField(max_length=16, index=True, default="drafted")
        paid_at = peewee.DateTimeField(null=True)
        created_at = peewee.DateTimeField()

        class Meta:
            database = db
            table_name = "invoices"

    class PaymentRow(peewee.Model):
        payment_key = peewee.CharField(max_length=255, primary_key=True)
        source = peewee.CharField(max_length=64)
        external_id = peewee.CharField(max_length=200)
        status = peewee.CharField(max_length=16)
        amount = peewee.CharField(max_length=32)
        currency = peewee.CharField(max_length=3)
        invoice_number = peewee.CharField(max_length=32, null=True, index=True)
        contact_id = peewee.CharField(max_length=32, null=True)
        recorded_at = peewee.DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "payments"

    class BoardRow(peewee.Model):
        post_id = peewee.CharField(max_length=32, primary_key=True)
        topic = peewee.CharField(max_length=64, index=True)
        subject = peewee.CharField(max_length=200)
        text = peewee.TextField()
        data = peewee.TextField(default="{}")
        by = peewee.CharField(max_length=200)
        job_id = peewee.CharField(max_length=32, null=True)
        posted_at = peewee.DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "board"

    db.create_tables([FlowRow, InvoiceRow, PaymentRow, BoardRow])


def down(migrator: Any, db: peewee.Database) -> None:
    for table in ("board", "payments", "invoices", "flows"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
