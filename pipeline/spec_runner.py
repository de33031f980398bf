"""`cxr run-spec`: execute a compiled Vertex AI (KFP v2) spec offline, task by task.

Each container task runs as its own process with the command and arguments the spec gives
it (TFX's KubeflowV2 entrypoint), the `{{$}}` placeholder replaced by an ExecutorInput built
the way Vertex AI Pipelines builds it: parameters from the spec's constants and the run's
runtime parameters, input artifacts from upstream outputs (with the metadata their executors
reported), output URIs under the pipeline root. A task's pre-cache check (ImageExampleGen's
driver) runs first, as on Vertex AI. Resolver tasks are answered from the artifacts earlier
runs of this command recorded under the pipeline root (Vertex AI asks its ML Metadata).

What it does not do: caching (every task runs), containers (tasks run with this Python and
this checkout stands in for the image's /cxr: a parameter naming a file there is read from
here), Vertex AI Training or Dataflow jobs, quotas, IAM.
"""
import dataclasses
import datetime
import json
import os
import re
import subprocess
import sys
import time
import uuid
from typing import Any, Callable, Dict, List, Mapping, Optional

from google.protobuf import json_format, struct_pb2
from kfp.local import graph_utils
from kfp.pipeline_spec import pipeline_spec_pb2 as pb

from components.code_digest import PACKAGES_ROOT
from pipeline.config import IMAGE_PROJECT_DIR

METADATA_DIR = "run-spec-metadata"
PUSHER_TASK = "Pusher"
ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Exit)\b.*:\s?.*")
ARTIFACT_NAME_PREFIX = "projects/local/locations/local/metadataStores/default/artifacts/"


class SpecRunError(ValueError):
    """A spec, parameter or staged folder that cannot be used: one line."""


class TaskFailed(Exception):
    """A task exited with an error: one line naming the task, its error and its log."""


@dataclasses.dataclass
class TaskRun:
    name: str
    seconds: float
    outputs: Dict[str, List[Dict[str, Any]]]


@dataclasses.dataclass
class SpecRun:
    job_id: str
    pipeline_root: str
    tasks: List[TaskRun]

    def outputs(self, task: str, key: str) -> List[Dict[str, Any]]:
        return next(t.outputs.get(key, []) for t in self.tasks if t.name == task)

    @property
    def pushed_model(self) -> Optional[str]:
        """The pushed version's URI when the Pusher pushed, else None."""
        if not any(t.name == PUSHER_TASK for t in self.tasks):
            return None
        for artifact in self.outputs(PUSHER_TASK, "pushed_model"):
            metadata = artifact.get("metadata", {})
            if metadata.get("pushed"):
                return metadata.get("pushed_destination")
        return None


def load_job(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            job = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise SpecRunError(f"cannot read the pipeline spec {path}: {error}") from None
    if "pipelineSpec" not in job:
        raise SpecRunError(f"{path} is not a compiled pipeline job (no pipelineSpec): "
                           "write it with `cxr compile`")
    return job


def parameter_values(job: Dict[str, Any], overrides: Mapping[str, str]) -> Dict[str, Any]:
    """The root runtime parameters: declared defaults, the spec's runtimeConfig, then
    `--param k=v` values, each converted to its declared type."""
    declared = job["pipelineSpec"].get("root", {}).get("inputDefinitions", {}).get(
        "parameters", {})
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise SpecRunError(f"unknown runtime parameter {unknown[0]!r}; the spec declares "
                           f"{', '.join(sorted(declared)) or 'none'}")
    values = {}
    runtime = job.get("runtimeConfig", {})
    for name, spec in declared.items():
        kind = spec.get("type") or spec.get("parameterType")
        if name in overrides:
            values[name] = convert_parameter(name, overrides[name], kind)
        elif name in runtime.get("parameterValues", {}):
            values[name] = runtime["parameterValues"][name]
        elif name in runtime.get("parameters", {}):
            values[name] = next(iter(runtime["parameters"][name].values()))
        elif "defaultValue" in spec:
            default = spec["defaultValue"]
            values[name] = next(iter(default.values())) if isinstance(default, dict) \
                else default
        else:
            raise SpecRunError(f"runtime parameter {name!r} has no value: pass "
                               f"--param {name}=VALUE")
        values[name] = convert_parameter(name, values[name], kind)
    return values


def convert_parameter(name: str, value: Any, kind: str) -> Any:
    try:
        if kind in ("INT", "NUMBER_INTEGER"):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind in ("DOUBLE", "NUMBER_DOUBLE"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SpecRunError(f"runtime parameter {name}={value!r} is not a valid "
                           f"{kind.lower()}") from None


def _dependencies(tasks: Mapping[str, pb.PipelineTaskSpec]) -> Dict[str, List[str]]:
    """Upstream tasks of each task: declared ones and the producers of its inputs (a
    resolver's second query names the first only through its input)."""
    dependencies = {}
    for name, task in tasks.items():
        upstream = set(task.dependent_tasks)
        upstream.update(spec.task_output_artifact.producer_task
                        for spec in task.inputs.artifacts.values()
                        if spec.HasField("task_output_artifact"))
        upstream.update(spec.task_output_parameter.producer_task
                        for spec in task.inputs.parameters.values()
                        if spec.HasField("task_output_parameter"))
        dependencies[name] = sorted(upstream)
    return dependencies


def _value(kind: int, value: Any) -> pb.Value:
    """An old-style (schema 2.0.0) parameter value of the declared type."""
    if kind == pb.PrimitiveType.INT:
        return pb.Value(int_value=int(value))
    if kind == pb.PrimitiveType.DOUBLE:
        return pb.Value(double_value=float(value))
    return pb.Value(string_value=str(value))


def _constant(spec: pb.TaskInputsSpec.InputParameterSpec) -> Any:
    runtime = spec.runtime_value
    if runtime.HasField("constant_value"):
        return getattr(runtime.constant_value, runtime.constant_value.WhichOneof("value"))
    return json_format.MessageToDict(runtime.constant)


class ArtifactStore:
    """Artifacts the runs of this command produced, as JSON under the pipeline root: what
    resolver tasks query (on Vertex AI, its ML Metadata)."""

    def __init__(self, pipeline_root: str):
        self.folder = os.path.join(pipeline_root, METADATA_DIR)

    def record(self, artifact: Dict[str, Any]) -> None:
        import tensorflow as tf

        tf.io.gfile.makedirs(self.folder)
        record = {**artifact, "create_time": time.time()}
        path = os.path.join(self.folder, artifact["name"].rsplit("/", 1)[-1] + ".json")
        with tf.io.gfile.GFile(path, "w") as f:
            json.dump(record, f)

    def all(self) -> List[Dict[str, Any]]:
        import tensorflow as tf

        if not tf.io.gfile.isdir(self.folder):
            return []
        records = []
        for name in tf.io.gfile.listdir(self.folder):
            with tf.io.gfile.GFile(os.path.join(self.folder, name)) as f:
                records.append(json.load(f))
        return records

    def query(self, filter_text: str) -> Optional[Dict[str, Any]]:
        """The newest artifact matching a Vertex ML Metadata filter of `key=value` clauses
        joined by AND (the form TFX's resolver tasks compile to)."""
        clauses = [_clause(c) for c in re.split(r"\s+AND\s+", filter_text.strip())]
        matches = [a for a in self.all() if all(_matches(a, k, v) for k, v in clauses)]
        return max(matches, key=lambda a: a["create_time"]) if matches else None


def _clause(text: str):
    key, sep, value = text.partition("=")
    if not sep:
        raise SpecRunError(f"resolver filter clause {text!r} is not key=value")
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        value = value[1:-1]
    return key.strip(), value


def _matches(artifact: Dict[str, Any], key: str, value: str) -> bool:
    if key == "schema_title":
        return artifact["schema_title"] == value
    if key == "state":
        return value == "LIVE"
    if key == "name":
        return artifact["name"] == value
    match = re.fullmatch(r"metadata\.(\w+)\.(number_value|string_value)", key)
    if not match:
        raise SpecRunError(f"resolver filter key {key!r} is not supported offline")
    actual = artifact.get("metadata", {}).get(match.group(1))
    if actual is None:
        return False
    if match.group(2) == "number_value":
        return float(actual) == float(value)
    return str(actual) == value


def _schema_title(artifact_type: pb.ArtifactTypeSchema) -> str:
    if artifact_type.WhichOneof("kind") == "schema_title":
        return artifact_type.schema_title
    match = re.search(r"^title:\s*(\S+)", artifact_type.instance_schema, re.M)
    return match.group(1) if match else "system.Artifact"


def _runtime_artifact(artifact: Dict[str, Any]) -> pb.RuntimeArtifact:
    runtime = pb.RuntimeArtifact(name=artifact["name"], uri=artifact["uri"])
    runtime.type.instance_schema = artifact["instance_schema"]
    json_format.ParseDict(artifact.get("metadata", {}), runtime.metadata)
    return runtime


def _last_error_line(log_file: str) -> str:
    try:
        with open(log_file, encoding="utf-8", errors="replace") as f:
            lines = [line.rstrip() for line in f]
    except OSError:
        return "no log"
    errors = [line for line in lines if ERROR_LINE.match(line)]
    return (errors or [line for line in lines if line.strip()] or ["no output"])[-1][:400]


class SpecRunner:
    def __init__(self, job: Dict[str, Any], parameters: Mapping[str, Any], log_dir: str,
                 environment: Optional[Mapping[str, str]] = None,
                 echo: Callable[[str], None] = print):
        self.job = job
        self.spec = json_format.ParseDict(job["pipelineSpec"], pb.PipelineSpec(),
                                          ignore_unknown_fields=True)
        self.executors = json_format.ParseDict(
            json_format.MessageToDict(self.spec.deployment_spec),
            pb.PipelineDeploymentConfig(), ignore_unknown_fields=True).executors
        self.pipeline_root = job.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
        if not self.pipeline_root:
            raise SpecRunError("the spec has no pipeline root (runtimeConfig."
                               "gcsOutputDirectory): recompile it with --pipeline-root")
        self.parameters = dict(parameters)
        stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.job_id = f"{self.spec.pipeline_info.name}-{stamp}-{uuid.uuid4().hex[:6]}"
        self.log_dir = os.path.join(log_dir, self.job_id)
        self.environment = {**os.environ, **(environment or {})}
        self.echo = echo
        self.store = ArtifactStore(self.pipeline_root)
        self.produced: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}

    def run(self) -> SpecRun:
        tasks = self.spec.root.dag.tasks
        order = graph_utils.topological_sort(_dependencies(tasks))
        os.makedirs(self.log_dir, exist_ok=True)
        self.echo(f"Job {self.job_id}: {len(order)} tasks, pipeline root {self.pipeline_root}")
        runs = []
        while order:
            name = order.pop()
            start = time.monotonic()
            self.echo(f"[{_clock()}] start {name}")
            outputs = self._run_task(name, tasks[name])
            seconds = time.monotonic() - start
            self.produced[name] = outputs
            runs.append(TaskRun(name, seconds, outputs))
            self.echo(f"[{_clock()}] end   {name} ({seconds:.1f} s)")
        return SpecRun(self.job_id, self.pipeline_root, runs)

    def _run_task(self, name: str, task: pb.PipelineTaskSpec) -> Dict[str, List[Dict]]:
        component = self.spec.components[task.component_ref.name]
        executor = self.executors[component.executor_label]
        kind = executor.WhichOneof("spec")
        if kind == "resolver":
            return self._resolve(name, task, component, executor.resolver)
        if kind != "container":
            raise SpecRunError(f"task {name}: executor kind {kind!r} cannot run offline")
        executor_input, outputs = self._executor_input(name, task, component)
        container = executor.container
        if container.lifecycle.HasField("pre_cache_check"):
            check = container.lifecycle.pre_cache_check
            self._launch(name, "pre-cache check", list(check.command) + list(check.args),
                         executor_input)
        self._launch(name, "executor", list(container.command) + list(container.args),
                     executor_input)
        return self._collect(name, executor_input, outputs)

    def _input_artifacts(self, task: pb.PipelineTaskSpec) -> Dict[str, List[Dict]]:
        artifacts = {}
        for key, spec in task.inputs.artifacts.items():
            if not spec.HasField("task_output_artifact"):
                raise SpecRunError(f"input artifact {key} comes from outside a task: not "
                                   "supported offline")
            producer = spec.task_output_artifact
            artifacts[key] = self.produced[producer.producer_task].get(
                producer.output_artifact_key, [])
        return artifacts

    def _executor_input(self, name: str, task: pb.PipelineTaskSpec,
                        component: pb.ComponentSpec):
        task_root = os.path.join(self.pipeline_root, self.job_id, name)
        executor_input = pb.ExecutorInput()
        for key, spec in task.inputs.parameters.items():
            declared = component.input_definitions.parameters[key]
            if spec.HasField("component_input_parameter"):
                value = self.parameters[spec.component_input_parameter]
            elif spec.HasField("runtime_value"):
                value = _constant(spec)
            else:
                raise SpecRunError(f"task {name}: parameter {key} has a source that cannot "
                                   "be resolved offline")
            if isinstance(value, str) and value.startswith(IMAGE_PROJECT_DIR + "/"):
                value = os.path.join(PACKAGES_ROOT, value[len(IMAGE_PROJECT_DIR) + 1:])
            if declared.parameter_type:
                executor_input.inputs.parameter_values[key].CopyFrom(
                    json_format.ParseDict(value, struct_pb2.Value()))
            else:
                executor_input.inputs.parameters[key].CopyFrom(_value(declared.type, value))
        for key, artifacts in self._input_artifacts(task).items():
            executor_input.inputs.artifacts[key].artifacts.extend(
                _runtime_artifact(a) for a in artifacts)
        outputs = {}
        for key, spec in component.output_definitions.artifacts.items():
            artifact = {"name": ARTIFACT_NAME_PREFIX + uuid.uuid4().hex,
                        "uri": os.path.join(task_root, key),
                        "schema_title": _schema_title(spec.artifact_type),
                        "instance_schema": spec.artifact_type.instance_schema,
                        "metadata": {}}
            outputs[key] = artifact
            executor_input.outputs.artifacts[key].artifacts.append(_runtime_artifact(artifact))
        executor_input.outputs.output_file = os.path.join(task_root, "executor_output.json")
        return executor_input, outputs

    def _launch(self, name: str, step: str, command: List[str],
                executor_input: pb.ExecutorInput) -> None:
        serialized = json_format.MessageToJson(executor_input, indent=None)
        arguments = []
        for argument in command:
            if argument == "{{$}}":
                arguments.append(serialized)
            elif "{{$" in argument:
                raise SpecRunError(f"task {name}: placeholder {argument!r} is not supported "
                                   "offline")
            else:
                arguments.append(argument)
        if arguments and arguments[0] in ("python", "python3"):
            arguments[0] = sys.executable  # the image's interpreter is this environment's
        log_file = os.path.join(self.log_dir, f"{name}.log")
        with open(log_file, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(arguments[:4])} ... ({step})\n")
            log.flush()
            code = subprocess.call(arguments, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=self.environment)
        if code != 0:
            raise TaskFailed(f"task {name} failed ({step}, exit status {code}): "
                               f"{_last_error_line(log_file)} (log: {log_file})")

    def _collect(self, name: str, executor_input: pb.ExecutorInput,
                 outputs: Dict[str, Dict]) -> Dict[str, List[Dict]]:
        """Output artifacts with the metadata the executor reported (Vertex AI records it
        in ML Metadata and passes it downstream)."""
        import tensorflow as tf

        reported = pb.ExecutorOutput()
        path = executor_input.outputs.output_file
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                json_format.Parse(f.read(), reported, ignore_unknown_fields=True)
        result = {}
        for key, artifact in outputs.items():
            if reported.artifacts[key].artifacts:
                runtime = reported.artifacts[key].artifacts[0]
                artifact = {**artifact, "uri": runtime.uri or artifact["uri"],
                            "metadata": json_format.MessageToDict(runtime.metadata)}
            self.store.record(artifact)
            result[key] = [artifact]
        return result

    def _resolve(self, name: str, task: pb.PipelineTaskSpec, component: pb.ComponentSpec,
                 resolver: pb.PipelineDeploymentConfig.ResolverSpec) -> Dict[str, List[Dict]]:
        inputs = self._input_artifacts(task)
        result = {}
        for key, query in resolver.output_artifact_queries.items():
            text = _fill_artifact_metadata(query.filter, inputs)
            found = self.store.query(text) if text is not None else None
            result[key] = [found] if found else []
            self.echo(f"    {name}: {key} -> {found['uri'] if found else 'nothing'}")
        return result


def _fill_artifact_metadata(text: str, inputs: Dict[str, List[Dict]]) -> Optional[str]:
    """Resolves {{$.inputs.artifacts['k'].metadata['m']}}; None when input k is empty."""
    pattern = re.compile(r"\{\{\$\.inputs\.artifacts\['(\w+)'\]\.metadata\['(\w+)'\]\}\}")
    missing = False

    def fill(match):
        nonlocal missing
        artifacts = inputs.get(match.group(1)) or []
        if not artifacts or match.group(2) not in artifacts[0].get("metadata", {}):
            missing = True
            return ""
        return str(artifacts[0]["metadata"][match.group(2)])

    filled = pattern.sub(fill, text)
    return None if missing else filled


def _clock() -> str:
    return datetime.datetime.now().strftime("%H:%M:%S")


def buckets_named(job: Dict[str, Any], extra_uris: List[str]) -> List[str]:
    """Every Cloud Storage bucket the spec or the staged folders name."""
    text = json.dumps(job) + " " + " ".join(extra_uris)
    return sorted(set(re.findall(r"gs://([a-z0-9][a-z0-9._-]{1,220})", text)))


def parse_stage(text: str):
    local, sep, uri = text.partition("=")
    if not sep or not uri.startswith("gs://") or not local:
        raise SpecRunError(f"--stage {text!r}: expected LOCAL_DIR=gs://BUCKET/PATH")
    if not os.path.isdir(local):
        raise SpecRunError(f"--stage {text!r}: {local} is not a folder")
    return os.path.abspath(local), uri.rstrip("/")


def copy_tree(source: str, destination: str) -> int:
    """Copies a folder through tf.io.gfile (either side may be gs://); returns file count."""
    import tensorflow as tf

    count = 0
    for folder, _, files in tf.io.gfile.walk(source):
        relative = os.path.relpath(folder.rstrip("/"), source.rstrip("/"))
        target = destination if relative == "." else os.path.join(destination, relative)
        tf.io.gfile.makedirs(target)
        for name in files:
            tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name),
                             overwrite=True)
            count += 1
    return count


def run_offline(spec_file: str, parameters: Mapping[str, str], stages: List[str],
                emulate_gcs: bool, output_dir: str,
                echo: Callable[[str], None] = print) -> SpecRun:
    """The whole offline check: the emulated bucket (if asked), staged folders, the run,
    and, with the emulator, a copy of the buckets under output_dir when the run ends."""
    job = load_job(spec_file)
    values = parameter_values(job, parameters)
    staged = [parse_stage(text) for text in stages]
    root = job.get("runtimeConfig", {}).get("gcsOutputDirectory", "")
    uses_gcs = root.startswith("gs://") or any(uri for _, uri in staged) or "gs://" in str(
        values)
    if uses_gcs and not emulate_gcs:
        echo("The spec names gs:// paths and --emulate-gcs is not given: tasks will use the "
             "real Cloud Storage with this machine's credentials.")
    if not emulate_gcs:
        for local, uri in staged:
            echo(f"Staged {copy_tree(local, uri)} files from {local} to {uri}")
        return SpecRunner(job, values, os.path.join(output_dir, "logs"), echo=echo).run()

    from pipeline import gcs_emulator

    with gcs_emulator.EmulatedGcs() as gcs:
        environment = gcs.environment()
        saved = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)
        try:
            buckets = buckets_named(job, [uri for _, uri in staged])
            for bucket in buckets:
                gcs.create_bucket(bucket)
            echo(f"Emulated Cloud Storage on {gcs.proxy_url} with bucket(s) "
                 f"{', '.join(buckets) or 'none'}")
            for local, uri in staged:
                echo(f"Staged {copy_tree(local, uri)} files from {local} to {uri}")
            runner = SpecRunner(job, values, os.path.join(output_dir, "logs"), environment,
                                echo)
            try:
                return runner.run()
            finally:
                copy = os.path.join(output_dir, "gcs", runner.job_id)
                files = sum(copy_tree(f"gs://{bucket}/", os.path.join(copy, bucket))
                            for bucket in buckets)
                echo(f"Copied the emulated buckets ({files} files) to {copy}")
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
