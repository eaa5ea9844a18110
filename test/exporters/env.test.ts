// Tests of src/exporters/env.ts: the OTEL_* variables and the Kubernetes downward-API
// variables, as the OpenTelemetry spec and docs/exporters.md say they are read.
import test from 'ava';

import {
  envMillis,
  k8sAttributes,
  otelResource,
  otlpEndpoint,
  otlpHttpSettings,
  parseOtlpHeaders,
  resourceAttributes,
} from '../../src/exporters/env.ts';
import { serviceOf } from '../../src/exporters/identity.ts';
import { fakeProcess } from './fake-source.ts';

test('the metrics endpoint defaults to the local collector', (t) => {
  t.deepEqual(otlpEndpoint('metrics', {}), { url: 'http://localhost:4318/v1/metrics', from: 'default' });
  t.deepEqual(otlpEndpoint('profiles', {}), { url: 'http://localhost:4318/v1development/profiles', from: 'default' });
});

test('OTEL_EXPORTER_OTLP_ENDPOINT is a base URL that gets the signal path, with or without a trailing slash or a path', (t) => {
  t.is(otlpEndpoint('metrics', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://col:4318' }).url, 'http://col:4318/v1/metrics');
  t.is(otlpEndpoint('metrics', { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://col:4318/' }).url, 'http://col:4318/v1/metrics');
  t.is(otlpEndpoint('profiles', { OTEL_EXPORTER_OTLP_ENDPOINT: 'https://gw.example/otlp/' }).url, 'https://gw.example/otlp/v1development/profiles');
});

test('the signal endpoint variable is used as given and beats the generic one', (t) => {
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:4318', OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'http://b:9999/custom' };
  t.deepEqual(otlpEndpoint('metrics', env), { url: 'http://b:9999/custom', from: 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT' });
  // ...and only for its own signal
  t.is(otlpEndpoint('profiles', env).url, 'http://a:4318/v1development/profiles');
  t.is(otlpEndpoint('profiles', { OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT: 'http://p:4040/v1development/profiles' }).url, 'http://p:4040/v1development/profiles');
});

test('an explicit URL (a flag) beats the environment; one with no path gets the signal path', (t) => {
  const env = { OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT: 'http://env:1/x' };
  t.deepEqual(otlpEndpoint('profiles', env, 'http://flag:4318'), { url: 'http://flag:4318/v1development/profiles', from: 'option' });
  t.is(otlpEndpoint('profiles', env, 'http://flag:4040/v1development/profiles').url, 'http://flag:4040/v1development/profiles');
  t.is(otlpEndpoint('profiles', env, '  ').url, 'http://env:1/x', 'a blank flag is no flag');
});

test('a malformed endpoint is an error that names where it came from', (t) => {
  t.throws(() => otlpEndpoint('metrics', { OTEL_EXPORTER_OTLP_ENDPOINT: 'col:4318' }), { message: /OTEL_EXPORTER_OTLP_ENDPOINT/ });
  t.throws(() => otlpEndpoint('metrics', {}, 'ftp://x/'), { message: /http or https/ });
  t.throws(() => otlpEndpoint('metrics', { OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: 'not a url' }), { message: /OTEL_EXPORTER_OTLP_METRICS_ENDPOINT/ });
});

test('OTEL_METRIC_EXPORT_INTERVAL is read in milliseconds; a bad value warns and keeps the default', (t) => {
  t.is(envMillis({}, 'OTEL_METRIC_EXPORT_INTERVAL', 60000), 60000);
  t.is(envMillis({ OTEL_METRIC_EXPORT_INTERVAL: '5000' }, 'OTEL_METRIC_EXPORT_INTERVAL', 60000), 5000);
  const warnings: string[] = [];
  for (const bad of ['5s', '-1', '0', 'soon']) {
    t.is(envMillis({ OTEL_METRIC_EXPORT_INTERVAL: bad }, 'OTEL_METRIC_EXPORT_INTERVAL', 60000, (m) => warnings.push(m)), 60000);
  }
  t.is(warnings.length, 4);
  t.regex(warnings[0]!, /OTEL_METRIC_EXPORT_INTERVAL='5s'/);
});

test('OTEL_EXPORTER_OTLP_HEADERS: comma-separated k=v, percent-decoded; the signal variable wins per key', (t) => {
  t.deepEqual(parseOtlpHeaders('api-key=abc%20def, X-Scope-OrgID=tenant-1,,broken'), { 'api-key': 'abc def', 'X-Scope-OrgID': 'tenant-1' });
  const s = otlpHttpSettings('profiles', {
    OTEL_EXPORTER_OTLP_HEADERS: 'a=1,b=2',
    OTEL_EXPORTER_OTLP_PROFILES_HEADERS: 'b=3',
    OTEL_EXPORTER_OTLP_TIMEOUT: '2500',
    OTEL_EXPORTER_OTLP_PROFILES_COMPRESSION: 'gzip',
  });
  t.deepEqual(s, { headers: { a: '1', b: '3' }, timeoutMs: 2500, compression: 'gzip' });
  t.deepEqual(otlpHttpSettings('profiles', {}), { headers: {}, timeoutMs: 10000, compression: 'none' });
});

test('k8s.* attributes come from the downward-API variables, K8S_ names first', (t) => {
  t.deepEqual(k8sAttributes({}), {});
  t.deepEqual(k8sAttributes({ POD_NAME: 'api-7d9', POD_NAMESPACE: 'shop', NODE_NAME: 'n1', CONTAINER_NAME: 'heaptap' }), {
    'k8s.pod.name': 'api-7d9', 'k8s.namespace.name': 'shop', 'k8s.node.name': 'n1', 'k8s.container.name': 'heaptap',
  });
  t.deepEqual(k8sAttributes({ K8S_POD_NAME: 'a', POD_NAME: 'b', K8S_NAMESPACE_NAME: ' ', POD_NAMESPACE: 'ns' }), {
    'k8s.pod.name': 'a', 'k8s.namespace.name': 'ns',
  }, 'blank values are unset');
});

test('the resource: service.name defaults to heaptap, with the SDK attributes and k8s.*', (t) => {
  const a = resourceAttributes(otelResource({ env: { K8S_POD_NAME: 'api-7d9', K8S_NAMESPACE_NAME: 'shop' } }));
  t.is(a['service.name'], 'heaptap');
  t.is(a['k8s.pod.name'], 'api-7d9');
  t.is(a['k8s.namespace.name'], 'shop');
  t.is(a['telemetry.sdk.language'], 'nodejs');
});

test('the resource merges OTEL_RESOURCE_ATTRIBUTES over k8s.*, OTEL_SERVICE_NAME over both, and an explicit name over all', (t) => {
  const env = {
    K8S_POD_NAME: 'from-downward-api',
    OTEL_RESOURCE_ATTRIBUTES: 'k8s.pod.name=from-otel,deployment.environment.name=prod,service.name=ra',
    OTEL_SERVICE_NAME: 'checkout',
  };
  const a = resourceAttributes(otelResource({ env }));
  t.is(a['k8s.pod.name'], 'from-otel');
  t.is(a['deployment.environment.name'], 'prod');
  t.is(a['service.name'], 'checkout');
  t.is(resourceAttributes(otelResource({ env, serviceName: 'flag' }))['service.name'], 'flag');
  t.is(resourceAttributes(otelResource({ env: { OTEL_RESOURCE_ATTRIBUTES: 'service.name=ra' } }))['service.name'], 'ra');
});

test('reading another env for the resource leaves process.env as it was', (t) => {
  const before = { ...process.env };
  otelResource({ env: { OTEL_SERVICE_NAME: 'x', OTEL_RESOURCE_ATTRIBUTES: 'a=b' } });
  t.deepEqual({ ...process.env }, before);
});

test('a process is filed under the service it declared, else the configured one, else its executable', (t) => {
  const declared = fakeProcess({ pid: 1, exe: '/usr/bin/python3', service: 'orders' });
  const silent = fakeProcess({ pid: 2, exe: '/usr/bin/python3' });
  t.is(serviceOf(declared, 'checkout'), 'orders');
  t.is(serviceOf(silent, 'checkout'), 'checkout');
  t.is(serviceOf(silent), 'python3');
});
