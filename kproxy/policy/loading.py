"""Reading policy files and checking them against the operator's guardrails.

A university's file is first validated against the ``UniversityPolicy`` schema, then
against the guardrails: the university must be one the operator federates with, each
admitted identity's issuer one the operator gave that university, every rule's
identities must exist, no fixed group may be forbidden and no rule may name a reserved
namespace. Every problem carries file, line and field, and all of a file's problems are
reported together.

Files are ``*.yaml`` and ``*.yml`` directly in the policy directory; names starting with
``.`` are skipped, which also skips the ``..data`` and timestamped directories of a
mounted ConfigMap while following its per-file symbolic links.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import MappingProxyType

from kproxy.configfile import (
    Document,
    Location,
    load_document,
    parse_document,
    validate,
)
from kproxy.errors import ConfigError, ConfigProblem
from kproxy.policy.mapping import IdentityEntry
from kproxy.policy.matching import Patterns, compile_rule
from kproxy.policy.model import (
    AdmittedIdentity,
    ClusterRule,
    Deny,
    Rule,
    UniversityPolicy,
)
from kproxy.policy.policyset import CompiledUniversity, Guardrails, PolicySet
from kproxy.policy.settings import FederationSettings, University

POLICY_SUFFIXES = (".yaml", ".yml")


def federation_settings(
    document: Document, location: Location = ("federation",)
) -> FederationSettings:
    """Validate the ``federation`` section of a configuration document.

    Problems name the field from the top of the file (``federation.universities``).
    Raises ``ConfigError``.
    """
    data = document.data
    for part in location:
        data = data.get(part) if isinstance(data, dict) else None
    if data is None:
        data = {}
    size = len(location)
    section = Document(
        path=document.path,
        data=data,
        lines={
            key[size:]: line
            for key, line in document.lines.items()
            if key[:size] == location
        },
    )
    try:
        return validate(section, FederationSettings)
    except ConfigError as exc:
        raise ConfigError(
            [_prefixed(problem, location) for problem in exc.problems]
        ) from exc


def _prefixed(problem: ConfigProblem, location: Location) -> ConfigProblem:
    prefix = ".".join(str(part) for part in location)
    field = f"{prefix}.{problem.field}" if problem.field else prefix
    return ConfigProblem(problem.file, problem.line, field, problem.message)


def compile_guardrails(settings: FederationSettings) -> Guardrails:
    grants = settings.namespace_grants
    return Guardrails(
        forbidden_users=Patterns.of_prefixes(settings.forbidden_users),
        forbidden_groups=Patterns.of_prefixes(settings.forbidden_groups),
        reserved_namespaces=Patterns.of_globs(settings.reserved_namespaces),
        grants_enabled=grants.enabled,
        grant_universities=(
            None if grants.universities is None else frozenset(grants.universities)
        ),
    )


def policy_files(directory: Path) -> list[Path]:
    """The policy files of a directory, sorted by name."""
    return sorted(
        path
        for path in directory.iterdir()
        if path.suffix in POLICY_SUFFIXES
        and not path.name.startswith(".")
        and path.is_file()
    )


def display_name(path: Path) -> str:
    """How a file is named in decisions: its directory and name only."""
    return f"{path.parent.name}/{path.name}"


def load_policy_file(
    path: Path, settings: FederationSettings | None
) -> CompiledUniversity:
    """Read, validate and compile one ``UniversityPolicy`` file.

    With ``settings`` of ``None`` only the schema is checked (issuers must then be
    URLs). Raises ``ConfigError`` listing every problem of the file.
    """
    return compile_policy_document(load_document(path), path, settings)


def compile_policy_text(
    text: str, path: Path, settings: FederationSettings | None
) -> CompiledUniversity:
    """Like ``load_policy_file`` for content already read from ``path``."""
    return compile_policy_document(parse_document(text, str(path)), path, settings)


def compile_policy_document(
    document: Document, path: Path, settings: FederationSettings | None
) -> CompiledUniversity:
    """Validate a parsed policy document and compile it; raise ``ConfigError``."""
    policy, university = checked_policy(document, settings)
    return _compile(display_name(path), policy, university, settings)


def checked_policy(
    document: Document, settings: FederationSettings | None
) -> tuple[UniversityPolicy, University]:
    """Validate a policy document against the schema and the guardrails.

    Returns the policy and the operator's entry for its university (a stand-in when
    ``settings`` is ``None``). Raises ``ConfigError`` listing every problem.
    """
    policy = validate(document, UniversityPolicy)
    return policy, _check_guardrails(document, policy, settings)


def _check_guardrails(
    document: Document, policy: UniversityPolicy, settings: FederationSettings | None
) -> University:
    problems: list[ConfigProblem] = []
    name = policy.metadata.name
    university = settings.universities.get(name) if settings else None
    if settings is not None and university is None:
        problems.append(
            document.problem(
                ("metadata", "name"),
                f"university {name!r} is not declared in the federation settings",
            )
        )
    if university is None:
        university = _unchecked_university(policy)
    problems.extend(_identity_problems(document, policy, university))
    problems.extend(_rule_problems(document, policy, settings))
    if problems:
        raise ConfigError(problems)
    return university


def _unchecked_university(policy: UniversityPolicy) -> University:
    # Without guardrails any issuer is accepted, a short name standing for whatever
    # URL the operator gives it, and placeholder prefixes are used, so that a
    # university's admin can check a draft on its own.
    issuers: dict[str, str] = {}
    for index, entry in enumerate(policy.identities):
        if entry.issuer.startswith("https://"):
            issuers[f"issuer{index}"] = entry.issuer
        else:
            issuers[entry.issuer] = f"https://{entry.issuer}.invalid"
    prefix = f"{policy.metadata.name}:"
    return University(
        issuers=issuers or {"none": "https://invalid"},
        username_prefix=prefix,
        group_prefix=prefix,
    )


def _identity_problems(
    document: Document, policy: UniversityPolicy, university: University
) -> Iterable[ConfigProblem]:
    seen: set[str] = set()
    for index, entry in enumerate(policy.identities):
        where: Location = ("identities", index)
        if entry.name in seen:
            yield document.problem((*where, "name"), f"name {entry.name!r} is repeated")
        seen.add(entry.name)
        if _issuer_url(entry, university) is None:
            allowed = ", ".join(sorted(university.issuers))
            yield document.problem(
                (*where, "issuer"),
                f"issuer {entry.issuer!r} is not one the operator allows this "
                f"university (allowed: {allowed})",
            )


def _rule_problems(
    document: Document, policy: UniversityPolicy, settings: FederationSettings | None
) -> Iterable[ConfigProblem]:
    entries = {entry.name for entry in policy.identities}
    reserved = Patterns.of_globs(settings.reserved_namespaces if settings else ())
    forbidden = Patterns.of_prefixes(settings.forbidden_groups if settings else ())
    prefix = (
        settings.universities[policy.metadata.name].group_prefix
        if (settings and policy.metadata.name in settings.universities)
        else ""
    )
    for index, entry in enumerate(policy.identities):
        for group_index, group in enumerate(entry.user.groups):
            if forbidden.matches(prefix + group):
                yield document.problem(
                    ("identities", index, "user", "groups", group_index),
                    f"group {prefix + group!r} is forbidden by the operator",
                )
    sections: tuple[tuple[str, Sequence[Rule | ClusterRule | Deny]], ...] = (
        ("rules", policy.rules),
        ("clusterRules", policy.cluster_rules),
        ("denies", policy.denies),
    )
    for section, rules in sections:
        for index, rule in enumerate(rules):
            for name in rule.identities or ():
                if name not in entries:
                    yield document.problem(
                        (section, index, "identities"),
                        f"no identities entry is named {name!r}",
                    )
    for index, allow in enumerate(policy.rules):
        for ns_index, namespace in enumerate(allow.namespaces):
            if reserved.matches(namespace):
                yield document.problem(
                    ("rules", index, "namespaces", ns_index),
                    f"namespace {namespace!r} is reserved by the operator",
                )


def _issuer_url(entry: AdmittedIdentity, university: University) -> str | None:
    if entry.issuer in university.issuers:
        return university.issuers[entry.issuer]
    if entry.issuer in university.issuers.values():
        return entry.issuer
    return None


def _compile(
    source: str,
    policy: UniversityPolicy,
    university: University,
    settings: FederationSettings | None,
) -> CompiledUniversity:
    name = policy.metadata.name
    entries = [
        _compile_entry(source, name, index, entry, university)
        for index, entry in enumerate(policy.identities)
    ]
    rules = [
        compile_rule(
            _where(source, "rules", index, rule.name),
            scope="namespaced",
            identities=rule.identities,
            namespaces=rule.namespaces,
            api_groups=rule.api_groups,
            resources=rule.resources,
            verbs=rule.verbs,
        )
        for index, rule in enumerate(policy.rules)
    ]
    cluster_rules = [
        compile_rule(
            _where(source, "clusterRules", index, rule.name),
            scope="cluster",
            identities=rule.identities,
            namespaces=None,
            api_groups=rule.api_groups,
            resources=rule.resources,
            verbs=rule.verbs,
            non_resource_urls=rule.non_resource_urls,
        )
        for index, rule in enumerate(policy.cluster_rules)
    ]
    denies = [
        compile_rule(
            _where(source, "denies", index, rule.name),
            scope="any",
            identities=rule.identities,
            namespaces=rule.namespaces,
            api_groups=rule.api_groups,
            resources=rule.resources,
            verbs=rule.verbs,
        )
        for index, rule in enumerate(policy.denies)
    ]
    return CompiledUniversity.build(
        name,
        source,
        entries=entries,
        rules=rules,
        cluster_rules=cluster_rules,
        denies=denies,
    )


def _where(source: str, section: str, index: int, name: str | None) -> str:
    label = f"{source}: {section}[{index}]"
    return f"{label} ({name})" if name else label


def _compile_entry(
    source: str,
    university_name: str,
    index: int,
    entry: AdmittedIdentity,
    university: University,
) -> IdentityEntry:
    mapping = entry.user
    account = entry.service_account
    issuer = _issuer_url(entry, university) or entry.issuer
    return IdentityEntry(
        university=university_name,
        name=entry.name,
        source=_where(source, "identities", index, entry.name),
        issuer=issuer,
        subjects=None if entry.subjects is None else Patterns.of_globs(entry.subjects),
        groups=None if entry.groups is None else frozenset(entry.groups),
        email_domains=(
            None
            if entry.email_domains is None
            else frozenset(domain.lower() for domain in entry.email_domains)
        ),
        idps=None if entry.idps is None else frozenset(entry.idps),
        service_account_namespace=(
            None if account is None else Patterns.of_globs([account.namespace])
        ),
        service_account_name=(
            None if account is None else Patterns.of_globs([account.name])
        ),
        username_prefix=university.username_prefix,
        group_prefix=university.group_prefix,
        username_template=mapping.username,
        fixed_groups=(entry.name, *mapping.groups),
        keep_groups=(
            Patterns.of_prefixes(mapping.keep_groups) if mapping.keep_groups else None
        ),
        extra_templates=MappingProxyType(
            {key: tuple(values) for key, values in mapping.extra.items()}
        ),
        keep_extra=frozenset(mapping.keep_extra),
    )


def load_policy_directory(
    directory: Path, settings: FederationSettings | None
) -> tuple[dict[str, CompiledUniversity], list[ConfigProblem]]:
    """Load every policy file of a directory; return the good ones and all problems.

    A university with two files is a problem in the second file (by name order).
    """
    universities: dict[str, CompiledUniversity] = {}
    problems: list[ConfigProblem] = []
    if not directory.is_dir():
        problems.append(ConfigProblem(str(directory), None, "", "not a directory"))
        return universities, problems
    for path in policy_files(directory):
        try:
            compiled = load_policy_file(path, settings)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if compiled.name in universities:
            problems.append(
                ConfigProblem(
                    str(path),
                    None,
                    "metadata.name",
                    f"university {compiled.name!r} already has a policy file",
                )
            )
            continue
        universities[compiled.name] = compiled
    return universities, problems


def policy_directory(settings: FederationSettings, base_dir: Path) -> Path:
    """The policy directory, relative to the configuration file's directory."""
    return (base_dir / settings.policy_directory).resolve()


def load_policy_set(settings: FederationSettings, *, base_dir: Path) -> PolicySet:
    """Load the whole policy directory; raise ``ConfigError`` on any problem."""
    directory = policy_directory(settings, base_dir)
    universities, problems = load_policy_directory(directory, settings)
    if problems:
        raise ConfigError(problems)
    return PolicySet.build(compile_guardrails(settings), universities)


def load_policy_models(
    directory: Path, settings: FederationSettings
) -> tuple[dict[str, UniversityPolicy], list[ConfigProblem]]:
    """Validate every policy file of a directory; return the models and all problems."""
    policies: dict[str, UniversityPolicy] = {}
    problems: list[ConfigProblem] = []
    for path in policy_files(directory):
        try:
            policy, _ = checked_policy(load_document(path), settings)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        policies[policy.metadata.name] = policy
    return policies, problems
