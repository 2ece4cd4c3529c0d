"""Name templates and tags against the official Lookout for Vision model (botocore 1.40.60).

Every template the configuration accepts must render, for every allowed project name,
model version, platform key and attempt, to names that match the official model's
patterns and lengths; anything else in a template is refused before the agent starts.
The official patterns are compiled with the ``regex`` package, which (unlike ``re``)
knows ``\\p{L}``, so the tag check is compared with the model's own pattern text.
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import regex
from botocore.loaders import Loader
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from agent import naming
from agent.config import AgentConfig
from agent.platform import DetectedPlatform
from agent.platform.model import KEY_MAX_LENGTH
from agent.request import NamingTemplates, PackagingRequest, derive_request, tag_text_problem

BASE = {"thingName": "dev-1", "region": "us-east-1", "projectName": "p", "s3Bucket": "l4v-models"}
# Long names (up to the API's 255) are drawn on purpose: they are the ones that overflow.
PROJECTS = st.one_of(
    st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_\-]{0,254}", fullmatch=True),
    st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_\-]{200,254}", fullmatch=True),
)
VERSIONS = st.integers(min_value=1, max_value=naming.MAX_MODEL_VERSION)
ATTEMPTS = st.integers(min_value=1, max_value=10**6)
PLATFORM_KEYS = st.from_regex(
    rf"[a-z0-9](?:[a-z0-9-]{{0,{KEY_MAX_LENGTH - 2}}}[a-z0-9])?", fullmatch=True
)


@pytest.fixture(scope="module")
def official_shapes(oracle_data_path: Path) -> dict[str, Any]:
    loader = Loader(extra_search_paths=[str(oracle_data_path)], include_default_search_paths=False)
    model = loader.load_service_model("lookoutvision", "service-2", "2020-11-20")
    return model["shapes"]  # type: ignore[no-any-return]


def satisfies(shapes: dict[str, Any], shape: str, value: str) -> bool:
    """Whether ``value`` meets the official shape's min/max and (whole-string) pattern."""
    spec = shapes[shape]
    if not spec.get("min", 0) <= len(value) <= spec.get("max", sys.maxsize):
        return False
    return "pattern" not in spec or regex.fullmatch(spec["pattern"], value) is not None


def platform(key: str) -> DetectedPlatform:
    return DetectedPlatform(
        os="LINUX", arch="X86_64", compiler_options={"mcpu": "core-avx2"}, key=key,
        description="test",
    )


def pieces(rule: naming.TemplateRule, literal_alphabet: str) -> st.SearchStrategy[str]:
    """Templates made of the rule's placeholders and allowed literal text, with every
    required placeholder present."""
    piece = st.one_of(
        st.sampled_from([f"{{{name}}}" for name in rule.allowed]),
        st.text(alphabet=literal_alphabet, min_size=1, max_size=30),
    )

    @st.composite
    def build(draw: st.DrawFn) -> str:
        parts = draw(st.lists(piece, max_size=8))
        for name in rule.required:
            if f"{{{name}}}" not in parts:
                parts.insert(draw(st.integers(0, len(parts))), f"{{{name}}}")
        return "".join(parts)

    return build()


NAME_LITERALS = "abcXYZ019_.-"
JOB_LITERALS = "abXY09-"
PREFIX_LITERALS = "ab09!_.*'()/-"


@st.composite
def version_templates(draw: st.DrawFn) -> str:
    numbers = st.integers(0, 999_999).map(str)
    parts = [draw(numbers) for _ in range(3)]
    parts[draw(st.integers(0, 2))] = "{version}"
    return ".".join(parts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    project=PROJECTS,
    version=VERSIONS,
    key=PLATFORM_KEYS,
    attempt=ATTEMPTS,
    component_name=pieces(naming.COMPONENT_NAME, NAME_LITERALS),
    component_version=version_templates(),
    job_name=pieces(naming.JOB_NAME, JOB_LITERALS),
    prefix=pieces(naming.S3_PREFIX, PREFIX_LITERALS),
)
def test_every_accepted_template_renders_names_the_service_accepts(
    official_shapes: dict[str, Any],
    project: str,
    version: int,
    key: str,
    attempt: int,
    component_name: str,
    component_version: str,
    job_name: str,
    prefix: str,
) -> None:
    """For any project name (up to 255 characters), version, platform key and attempt,
    templates the configuration accepts give a request whose every field matches the
    official model's pattern and length."""
    assume(not prefix.startswith("/") and len(prefix) <= 512)
    config = AgentConfig.model_validate(
        {
            **BASE,
            "projectName": project,
            "componentNameTemplate": component_name,
            "componentVersionTemplate": component_version,
            "jobNameTemplate": job_name,
            "s3Prefix": prefix,
        }
    )
    request = derive_request(
        project=project, model_version=version, platform=platform(key), attempt=attempt,
        bucket=config.s3_bucket, prefix=config.s3_prefix, templates=config.naming,
    )
    greengrass = request.greengrass
    checks = {
        "ProjectName": request.project_name,
        "ModelVersion": request.model_version,
        "ModelPackagingJobName": request.job_name,
        "ClientToken": request.client_token,
        "ComponentName": greengrass.component_name,
        "ComponentVersion": greengrass.component_version or "",
        "ComponentDescription": greengrass.component_description or "",
        "S3KeyPrefix": greengrass.s3_output_location.prefix or "",
    }
    failed = {shape: value for shape, value in checks.items()
              if not satisfies(official_shapes, shape, value)}
    assert failed == {}


@settings(max_examples=300, deadline=None)
@given(template=st.text(alphabet="{}[]!:.<>_0aZ-/ " + "projectlatfomversin", max_size=40),
       project=PROJECTS, version=VERSIONS, key=PLATFORM_KEYS)
def test_any_text_is_either_refused_or_renders_a_valid_component_name(
    official_shapes: dict[str, Any], template: str, project: str, version: int, key: str
) -> None:
    """Arbitrary template text never crashes rendering: the rule refuses it with a
    ValueError, or the name it renders matches the official ComponentName shape."""
    values = {"project": project, "platform": key, "version": str(version), "attempt": "1"}
    for rule, shape in ((naming.COMPONENT_NAME, "ComponentName"),
                        (naming.JOB_NAME, "ModelPackagingJobName")):
        try:
            name = naming.render(rule, template, values)
        except ValueError:
            continue
        assert satisfies(official_shapes, shape, name), (rule.setting, template, name)


ESCAPES = [
    "{project.__class__}",
    "{project.__class__.__init__.__globals__}",
    "{project[0]}",
    "{project!r}",
    "{project:>300}",
    "{0}",
    "{}",
    "{platform}{",
    "{platform}}",
    "{{platform}}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_format_string_features_are_refused_at_start(template: str) -> None:
    """Attribute access, indexing, conversions, format specs, positional fields and stray
    braces are not placeholders: the configuration naming the template is refused."""
    with pytest.raises(ValueError, match="componentNameTemplate"):
        AgentConfig.model_validate({**BASE, "componentNameTemplate": template})


@pytest.mark.parametrize(
    ("key", "template", "rule"),
    [
        ("componentNameTemplate", "{project}", "must contain {platform}"),
        ("componentNameTemplate", "{project}.{platform}.{version}", "{version} is not a placeholder"),
        ("componentNameTemplate", "{platform}.{attempt}", "{attempt} is not a placeholder"),
        ("componentNameTemplate", "my model {platform}", "character ' ' is not allowed"),
        ("componentVersionTemplate", "{version}{version}.0.0", "MAJOR.MINOR.PATCH"),
        ("componentVersionTemplate", "{version}.0", "MAJOR.MINOR.PATCH"),
        ("componentVersionTemplate", "{version}.01.0", "MAJOR.MINOR.PATCH"),
        ("componentVersionTemplate", "{version}.1234567.0", "MAJOR.MINOR.PATCH"),
        ("componentVersionTemplate", "{version}.{attempt}.0", "{attempt} is not a placeholder"),
        ("jobNameTemplate", "{project}-v{version}-{attempt}", "must contain {platform}"),
        ("jobNameTemplate", "{project}_{platform}_{version}_{attempt}", "character '_'"),
        ("s3Prefix", "/models/{project}/", "must not start with '/'"),
        ("s3Prefix", "models/{project}/{thing}/", "{thing} is not a placeholder"),
    ],
)
def test_each_template_takes_only_its_documented_placeholders(
    key: str, template: str, rule: str
) -> None:
    """Each template setting allows only its own placeholders and characters, and
    requires what keeps names distinct per platform, version and attempt."""
    with pytest.raises(ValueError, match=regex.escape(key)) as caught:
        AgentConfig.model_validate({**BASE, key: template})
    assert rule in str(caught.value)


def test_documented_defaults_and_examples_are_accepted() -> None:
    """The defaults and the README's examples pass the rules."""
    NamingTemplates()
    AgentConfig.model_validate(
        {
            **BASE,
            "componentNameTemplate": "acme.{project}-{platform}",
            "componentVersionTemplate": "1.{version}.0",
            "jobNameTemplate": "{platform}-{version}-{attempt}",
            "s3Prefix": "models/{project}/{platform}/v{version}/",
        }
    )


def test_longest_project_name_fits_every_generated_field() -> None:
    """A 255-character project name (the API's maximum) still gives a ComponentDescription
    of at most 256 characters, and distinct long names stay distinct."""
    first = derive_request(
        project="a" * 255, model_version=999_999, platform=platform("x86-64-cpu"), attempt=1,
        bucket="l4v-models", prefix="", templates=NamingTemplates(),
    )
    second = derive_request(
        project="a" * 254 + "b", model_version=999_999, platform=platform("x86-64-cpu"),
        attempt=1, bucket="l4v-models", prefix="", templates=NamingTemplates(),
    )
    assert isinstance(first, PackagingRequest)
    descriptions = {r.greengrass.component_description for r in (first, second)}
    assert len(descriptions) == 2
    assert all(d is not None and len(d) <= 256 for d in descriptions)
    assert first.greengrass.component_name != second.greengrass.component_name


# -- tags -----------------------------------------------------------------------------

def _assigned(char: str) -> bool:
    # Code points unassigned in this Python's Unicode data may be assigned in the
    # (newer) data of the regex package: compare only what both know.
    return unicodedata.category(char) != "Cn"


@settings(max_examples=2000, deadline=None)
@given(text=st.text(st.characters(codec="utf-8").filter(_assigned), max_size=6))
def test_tag_text_check_agrees_with_the_official_pattern(
    official_shapes: dict[str, Any], text: str
) -> None:
    """For any text, the agent's tag check accepts exactly what the official TagKey and
    TagValue pattern ``^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$`` accepts."""
    for shape in ("TagKey", "TagValue"):
        official = regex.fullmatch(official_shapes[shape]["pattern"], text) is not None
        assert (tag_text_problem(text) is None) == official, (shape, text)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("½", True),  # No: a number
        ("ß", True),
        ("東京", True),
        ("a b", True),
        ("\u00a0", True),  # Zs
        ("\u2028", True),  # Zl
        ("team@example.com:a/b=c+d_e-f", True),
        ("a\tb", False),  # Cc
        ("a\nb", False),
        ("e\u0301", False),  # combining acute accent (Mn)
        ("€", False),  # Sc
        ("a#b", False),
        ("\ud800", False),  # a lone surrogate
    ],
)
def test_tag_text_examples(
    official_shapes: dict[str, Any], text: str, valid: bool
) -> None:
    """Letters of any script, numbers such as '½' and separators are tag text; tabs,
    newlines, combining marks and symbols are not, as in the official pattern."""
    assert (tag_text_problem(text) is None) is valid
    assert (regex.fullmatch(official_shapes["TagKey"]["pattern"], text) is not None) is valid
