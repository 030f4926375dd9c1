"""Django 5.2 with the real django-cockroachdb backend, over TLS with sslmode=verify-full.

Each test writes a Django project into tmp_path (settings with ENGINE 'django_cockroachdb' and the
node's host, port, admin user and password, and an app `shop` with foreign keys, a ManyToMany, a
choices field, DecimalField, DateTimeField, JSONField, unique_together and an index), then runs
`makemigrations` and `migrate` as subprocesses (`python -m django`), exactly as a developer does,
then an ORM script (create, filter, select_related, prefetch_related, annotate(Count),
aggregate(Sum, Avg), bulk_create, update, delete, transaction.atomic with a rollback) whose
printed results the test checks, then a second migration (AlterField, AddField, unique_together
changes), a third (renames, removals, constraints) with a migration back and forward, and
`migrate shop zero`; then the admin site (changelists with filters, search and date hierarchy,
change, add and delete pages) through Django's test client, over the same database.

django-cockroachdb sends, among others: crdb_internal.increment_feature_counter() first thing,
SET enable_experimental_alter_column_type_general for AlterField, SELECT ... FROM unnest(%s::int[],
...) for bulk_create, GROUP BY the primary key for annotate(), and pg_index/pg_constraint
introspection with unnest(...) WITH ORDINALITY.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import psycopg2
import pytest
from conftest import ADMIN_PASSWORD, ADMIN_USER, ROOT, Node

pytest.importorskip("django")
pytest.importorskip("django_cockroachdb")

SETTINGS = """
SECRET_KEY = "pillbug-test"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = {apps!r}
DATABASES = {{"default": {{
    "ENGINE": "django_cockroachdb", "NAME": {database!r}, "USER": {user!r}, "PASSWORD": {password!r},
    "HOST": {host!r}, "PORT": {port!r},
    "OPTIONS": {{"sslmode": "verify-full", "sslrootcert": {sslrootcert!r}}},
}}}}
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
              "OPTIONS": {{"context_processors": [
                  "django.contrib.auth.context_processors.auth",
                  "django.contrib.messages.context_processors.messages",
                  "django.template.context_processors.request"]}}}}]
"""

FULL_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
             "django.contrib.admin", "django.contrib.messages", "shop"]
# The contrib apps without foreign keys of their own (auth and admin have some).
NO_FK_APPS = ["django.contrib.contenttypes", "django.contrib.sessions", "shop"]

MODELS = """
from django.db import models

FK = {{"db_constraint": {constraints}}}


class Category(models.Model):
    name = models.CharField(max_length=50, unique=True)


class Tag(models.Model):
    label = models.CharField(max_length=30)


class Product(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        LIVE = "live"

    name = models.CharField(max_length=100)
    sku = models.CharField(max_length=20)
    category = models.ForeignKey(Category, on_delete=models.CASCADE, related_name="products", **FK)
    tags = models.ManyToManyField(Tag, related_name="products", **FK)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    created = models.DateTimeField(auto_now_add=True)
    attrs = models.JSONField(default=dict)

    class Meta:
        unique_together = [("name", "sku")]
        indexes = [models.Index(fields=["status", "price"])]


class Order(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="orders", **FK)
    quantity = models.IntegerField()
    placed = models.DateTimeField()
"""

# The second migration: AlterField within a type family (varchar(100) -> varchar(200)) and across
# families (INT -> DECIMAL: a general ALTER COLUMN TYPE), AddField with a default,
# unique_together moved to other columns.
MODELS_V2 = [
    ("    name = models.CharField(max_length=100)\n",
     "    name = models.CharField(max_length=200)\n"
     "    stock = models.PositiveIntegerField(default=7)\n"
     "    note = models.TextField(null=True, blank=True)\n"),
    ("    quantity = models.IntegerField()\n",
     "    quantity = models.DecimalField(max_digits=8, decimal_places=1)\n"
     "    ref = models.UUIDField(null=True)\n"),
    ('unique_together = [("name", "sku")]', 'unique_together = [("sku", "status")]'),
]

# The third: RenameField, RemoveField, AddField, AlterField adding an index, a descending index,
# a CHECK constraint and a UniqueConstraint; then back to 0002 and forward again.
MODELS_V3 = [
    ("    note = models.TextField(null=True, blank=True)\n", "    remark = models.TextField(null=True, blank=True)\n"),
    ("    stock = models.PositiveIntegerField(default=7)\n", ""),
    ("    label = models.CharField(max_length=30)\n",
     "    label = models.CharField(max_length=30, db_index=True)\n"
     "    color = models.CharField(max_length=10, default='red')\n"),
    ('        indexes = [models.Index(fields=["status", "price"])]\n',
     '        indexes = [models.Index(fields=["status", "price"]), models.Index(fields=["-created"], name="prod_created")]\n'
     '        constraints = [models.CheckConstraint(condition=models.Q(price__gte=0), name="price_nonneg"),\n'
     '                       models.UniqueConstraint(fields=["name", "status"], name="uniq_name_status")]\n'),
]

ORM_SCRIPT = """
import datetime, decimal, json
import django
django.setup()
from django.db import IntegrityError, connection, transaction
from django.db.models import Avg, Count, F, Max, Q, Sum
from shop.models import Category, Order, Product, Tag

out = {}
books = Category.objects.create(name="books")
games = Category.objects.create(name="games")
tags = Tag.objects.bulk_create([Tag(label=f"t{i}") for i in range(3)])
out["bulk_pks"] = all(t.pk is not None for t in tags)
p1 = Product.objects.create(name="p1", sku="a", category=books, price=decimal.Decimal("9.99"),
                            attrs={"color": "red", "sizes": [1, 2]})
p2 = Product.objects.create(name="p2", sku="b", category=books, price=decimal.Decimal("20.00"),
                            status=Product.Status.LIVE)
p3 = Product.objects.create(name="p3", sku="c", category=games, price=decimal.Decimal("5.50"))
p1.tags.add(*tags[:2])
p2.tags.add(tags[0])
placed = datetime.datetime(2026, 12, 5, 10, 30, tzinfo=datetime.timezone.utc)
Order.objects.bulk_create([Order(product=p1, quantity=q, placed=placed) for q in (1, 2, 3)]
                          + [Order(product=p2, quantity=5, placed=placed)])
out["filter"] = list(Product.objects.filter(price__gt=6).order_by("name").values_list("name", flat=True))
out["json"] = list(Product.objects.filter(attrs__color="red").values_list("name", flat=True))
out["json_value"] = Product.objects.get(name="p1").attrs
out["choices"] = Product.objects.get(name="p2").get_status_display()
out["select_related"] = [[p.name, p.category.name]
                         for p in Product.objects.select_related("category").order_by("name")]
out["prefetch"] = [[p.name, sorted(t.label for t in p.tags.all())]
                   for p in Product.objects.prefetch_related("tags").order_by("name")]
out["annotate_count"] = [list(r) for r in
                         Category.objects.annotate(n=Count("products")).order_by("name").values_list("name", "n")]
out["annotate_sum"] = [[p.name, p.total] for p in
                       Product.objects.annotate(total=Sum("orders__quantity")).order_by("name")]
agg = Order.objects.aggregate(s=Sum("quantity"), a=Avg("quantity"), m=Max("placed"))
out["aggregate"] = [agg["s"], float(agg["a"]), agg["m"].isoformat()]
out["price_sum"] = str(Product.objects.aggregate(s=Sum("price"))["s"])
out["update"] = Product.objects.filter(category=books).update(price=F("price") + 1)
out["prices"] = [str(p) for p in Product.objects.order_by("name").values_list("price", flat=True)]
out["q_count"] = Product.objects.filter(Q(status="live") | Q(name="p3")).count()
try:
    with transaction.atomic():
        Category.objects.create(name="movies")
        Category.objects.create(name="books")
except IntegrityError as exc:
    out["integrity"] = str(exc).splitlines()[0]
out["rolled_back"] = Category.objects.filter(name="movies").exists()
with transaction.atomic():
    Category.objects.create(name="music")
    try:
        with transaction.atomic():
            Category.objects.create(name="games")
    except IntegrityError:
        out["savepoint_rollback"] = True
out["categories"] = sorted(Category.objects.values_list("name", flat=True))
out["group_by_value"] = list(Product.objects.values("status").annotate(n=Count("id")).order_by("status"))
out["delete"] = list(Order.objects.filter(product__name="p1").delete())
p3.delete()
out["counts"] = [Product.objects.count(), Order.objects.count(), Tag.objects.count()]
with connection.cursor() as cur:
    cur.execute("SELECT usage_count FROM crdb_internal.feature_usage WHERE feature_name LIKE 'django-cockroachdb%'")
    out["telemetry"] = cur.fetchall()
print(json.dumps(out))
"""


def write_project(path, node: Node, database: str, apps: list[str], constraints: bool) -> dict[str, str]:
    """The project's files, and the environment its subprocesses run in."""
    shop = path / "shop"
    (shop / "migrations").mkdir(parents=True)
    (shop / "__init__.py").write_text("")
    (shop / "migrations" / "__init__.py").write_text("")
    (shop / "models.py").write_text(MODELS.format(constraints=constraints))
    (path / "settings.py").write_text(SETTINGS.format(
        apps=apps, database=database, user=ADMIN_USER, password=ADMIN_PASSWORD, host=node.host,
        port=str(node.port), sslrootcert=os.path.join(node.certs_dir, "ca.crt")))
    (path / "orm_script.py").write_text(ORM_SCRIPT)
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="settings",
               PYTHONPATH=os.pathsep.join([str(path), ROOT, os.environ.get("PYTHONPATH", "")]))
    return env


def django(path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "django", *args], cwd=path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"django {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def run_script(path, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "orm_script.py"], cwd=path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, f"ORM script failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tables(node: Node, database: str) -> set[str]:
    rows = node.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
                    database=database)
    return {r[0] for r in rows}


def check_chain(tmp_path, node: Node, database: str, apps: list[str], constraints: bool) -> None:
    env = write_project(tmp_path, node, database, apps, constraints)
    django(tmp_path, env, "makemigrations", "shop")
    out = django(tmp_path, env, "migrate")
    assert "Applying shop.0001_initial... OK" in out
    assert {"shop_category", "shop_product", "shop_product_tags", "shop_order", "django_migrations",
            "django_content_type", "django_session"} <= tables(node, database)

    result = run_script(tmp_path, env)
    assert result["bulk_pks"] is True
    assert result["filter"] == ["p1", "p2"]
    assert result["json"] == ["p1"]
    assert result["json_value"] == {"color": "red", "sizes": [1, 2]}
    assert result["choices"] == "Live"
    assert result["select_related"] == [["p1", "books"], ["p2", "books"], ["p3", "games"]]
    assert result["prefetch"] == [["p1", ["t0", "t1"]], ["p2", ["t0"]], ["p3", []]]
    assert result["annotate_count"] == [["books", 2], ["games", 1]]
    assert result["annotate_sum"] == [["p1", 6], ["p2", 5], ["p3", None]]
    assert result["aggregate"] == [11, 2.75, "2026-12-05T10:30:00+00:00"]
    assert result["price_sum"] == "35.49"
    assert result["update"] == 2
    assert result["prices"] == ["10.99", "21.00", "5.50"]
    assert result["q_count"] == 2
    assert result["integrity"].startswith("duplicate key value violates unique constraint")
    assert result["rolled_back"] is False
    assert result["savepoint_rollback"] is True
    assert result["categories"] == ["books", "games", "music"]
    assert result["group_by_value"] == [{"status": "draft", "n": 2}, {"status": "live", "n": 1}]
    assert result["delete"][0] == 3
    assert result["counts"] == [2, 1, 3]
    assert result["telemetry"] and result["telemetry"][0][0] >= 1
    if constraints:
        # the foreign keys Django declared are enforced by the database, not only by the ORM
        with pytest.raises(psycopg2.errors.ForeignKeyViolation):
            node.sql("DELETE FROM shop_category WHERE name = 'books'", database=database)
        fks = node.sql("SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid = 'shop_order'::regclass",
                       database=database)
        assert len(fks) == 1

    # A second migration: AlterField, AddField with a default, unique_together moved.
    models = (tmp_path / "shop" / "models.py").read_text()
    for old, new in MODELS_V2:
        assert old in models
        models = models.replace(old, new)
    (tmp_path / "shop" / "models.py").write_text(models)
    django(tmp_path, env, "makemigrations", "shop")
    out = django(tmp_path, env, "migrate")
    assert "Applying shop.0002" in out
    rows = node.sql("SELECT name, stock, note FROM shop_product ORDER BY name", database=database)
    assert rows == [("p1", 7, None), ("p2", 7, None)]
    rows = node.sql("SELECT quantity, data_type FROM shop_order, information_schema.columns "
                    "WHERE table_name = 'shop_order' AND column_name = 'quantity'", database=database)
    assert [(str(q), t) for q, t in rows] == [("5.0", "numeric")]
    conn = node.connect(password=ADMIN_PASSWORD, user=ADMIN_USER, database=database)
    try:
        with conn.cursor() as cur:
            # the new unique_together holds: (sku, status) again is refused
            with pytest.raises(psycopg2.errors.UniqueViolation):
                cur.execute("INSERT INTO shop_product (name, sku, status, price, created, attrs, stock, "
                            "category_id) SELECT 'p9', sku, status, 1, now(), '{}', 0, category_id "
                            "FROM shop_product WHERE name = 'p1'")
    finally:
        conn.close()

    models = (tmp_path / "shop" / "models.py").read_text()
    for old, new in MODELS_V3:
        assert old in models
        models = models.replace(old, new)
    (tmp_path / "shop" / "models.py").write_text(models)
    # makemigrations asks whether note was renamed to remark
    proc = subprocess.run([sys.executable, "-m", "django", "makemigrations", "shop"], cwd=tmp_path, env=env,
                          input="y\n", capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = django(tmp_path, env, "migrate")
    assert "Applying shop.0003" in out
    rows = node.sql("SELECT name, remark FROM shop_product ORDER BY name", database=database)
    assert rows == [("p1", None), ("p2", None)]
    with pytest.raises(psycopg2.errors.CheckViolation):
        node.sql("UPDATE shop_product SET price = -1 WHERE name = 'p1'", database=database)
    indexes = {r[0] for r in node.sql("SELECT indexname FROM pg_indexes WHERE tablename = 'shop_product'",
                                      database=database)}
    assert {"prod_created", "uniq_name_status"} <= indexes
    out = django(tmp_path, env, "migrate", "shop", "0002")
    assert "Unapplying shop.0003" in out
    rows = node.sql("SELECT name, note, stock FROM shop_product ORDER BY name", database=database)
    assert rows == [("p1", None, 7), ("p2", None, 7)]
    out = django(tmp_path, env, "migrate", "shop")
    assert "Applying shop.0003" in out

    out = django(tmp_path, env, "migrate", "shop", "zero")
    assert "Unapplying shop.0001_initial... OK" in out
    assert not {t for t in tables(node, database) if t.startswith("shop_")}


def test_django_chain_without_fk_constraints(tmp_path, node: Node, db: str) -> None:
    """The ForeignKeys and the ManyToMany declared with db_constraint=False (no FOREIGN KEY
    constraints in the database), and only the contrib apps without foreign keys installed."""
    check_chain(tmp_path, node, db, NO_FK_APPS, constraints=False)


def test_django_chain(tmp_path, node: Node, db: str) -> None:
    """The whole chain with default settings: auth, contenttypes, sessions, admin, messages and
    shop, foreign keys with their constraints."""
    check_chain(tmp_path, node, db, FULL_APPS, constraints=True)
    # The admin site over the same database: its changelists (filters, search, date hierarchy),
    # change and delete pages, an add and a delete through the admin (with its LogEntry rows).
    again = tmp_path / "again"
    env = write_project(again, node, db, FULL_APPS, constraints=True)
    django(again, env, "makemigrations", "shop")
    django(again, env, "migrate")
    (again / "settings.py").write_text((again / "settings.py").read_text()
                                       + 'ROOT_URLCONF = "urls"\nALLOWED_HOSTS = ["*"]\n')
    (again / "urls.py").write_text("from django.contrib import admin\nfrom django.urls import path\n"
                                   "urlpatterns = [path('admin/', admin.site.urls)]\n")
    (again / "shop" / "admin.py").write_text(textwrap.dedent("""
        from django.contrib import admin
        from .models import Category, Order, Product, Tag

        @admin.register(Product)
        class ProductAdmin(admin.ModelAdmin):
            list_display = ("name", "sku", "category", "status", "price")
            list_filter = ("status", "category", "created")
            search_fields = ("name", "sku")
            date_hierarchy = "created"

        admin.site.register([Category, Order, Tag])
    """))
    script = textwrap.dedent("""
        import decimal
        import django
        django.setup()
        from django.contrib.admin.models import LogEntry
        from django.contrib.auth.models import Group, Permission, User
        from django.test import Client
        from django.test.utils import setup_test_environment
        from shop.models import Category, Product
        setup_test_environment()
        u = User.objects.create_user("u1", "u1@example.org", "pw")
        g = Group.objects.create(name="g1")
        u.groups.add(g)
        g.permissions.add(*Permission.objects.filter(codename__startswith="add_"))
        assert len(User.objects.get(username="u1").get_all_permissions()) > 0
        User.objects.create_superuser("boss", "boss@example.org", "pw")
        cat = Category.objects.create(name="tools")
        p = Product.objects.create(name="saw", sku="s1", category=cat, price=decimal.Decimal("12.50"))
        client = Client()
        assert client.login(username="boss", password="pw")
        for url in ["/admin/", "/admin/shop/product/", "/admin/shop/product/?status__exact=draft",
                    "/admin/shop/product/?q=saw", "/admin/shop/product/?created__year=2026",
                    "/admin/shop/category/", "/admin/auth/user/", f"/admin/shop/product/{p.pk}/change/",
                    "/admin/shop/product/add/", f"/admin/shop/category/{cat.pk}/delete/"]:
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        assert b"saw" in client.get("/admin/shop/product/?q=saw").content
        assert client.post("/admin/shop/category/add/", {"name": "made-in-admin"}).status_code == 302
        made = Category.objects.get(name="made-in-admin")
        assert client.post(f"/admin/shop/category/{made.pk}/delete/", {"post": "yes"}).status_code == 302
        assert not Category.objects.filter(name="made-in-admin").exists()
        print(LogEntry.objects.count())
    """)
    (again / "admin_script.py").write_text(script)
    proc = subprocess.run([sys.executable, "admin_script.py"], cwd=again, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == "2"  # the addition and the deletion
