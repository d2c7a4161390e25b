// Persisted filter sweep 30h: a request's text was matched to a manifest document only byte for
// byte. Apollo Router's safelist compares documents with whitespace, commas and comments ignored
// and their definitions sorted by name, since Apollo Client prints fragments in the order its
// documents were composed while Apollo's manifest generator sorts them. Here Apollo Client's
// query, unchanged in meaning, was refused under `enforce` (PERSISTED_QUERY_NOT_ALLOWED) and, with
// the safelist off, was not priced or hinted as its manifest id. Real Apollo Client, real proxy,
// real graphql-yoga backend.
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client'
import { request } from 'undici'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoBackend, type DemoBackend } from '../../helpers/backends.ts'
import { metricSum, startTestProxy, type TestProxy } from '../../helpers/proxy.ts'

// As a manifest is written by hand (one line) or generated (fragments sorted by name).
const MANIFEST_DOC = 'query EntityCard($id: ID!) { entity(id: $id) { ...Names ...Ids __typename } } fragment Ids on Entity { id __typename } fragment Names on Entity { name __typename }'

const IDS = gql`
  fragment Ids on Entity {
    id
  }
`
const NAMES = gql`
  # names come first in this app's bundle
  fragment Names on Entity {
    name
  }
`
const ENTITY_CARD = gql`
  query EntityCard($id: ID!) {
    entity(id: $id) {
      ...Names
      ...Ids
    }
  }
  ${NAMES}
  ${IDS}
`

describe('a manifest document sent as text, formatted and ordered as the client prints it', () => {
  let backend: DemoBackend
  let proxy: TestProxy
  const sent: string[] = []

  function client(tenant: string) {
    const recording: typeof fetch = (input, init) => {
      sent.push((JSON.parse(String(init?.body)) as { query: string }).query)
      return fetch(input, init)
    }
    return new ApolloClient({ link: new HttpLink({ uri: `${proxy.url}/graphql`, fetch: recording, headers: { 'x-tenant-id': tenant } }), cache: new InMemoryCache() })
  }
  const byId = async () => metricSum(await (await request(`${proxy.adminUrl}/metrics`)).body.text(), 'igw_persisted_operation_requests_total', 'persisted_id="entityCard"')

  beforeAll(async () => {
    backend = await startDemoBackend({ entities: 3 })
    proxy = await startTestProxy({
      persistedDocuments: { operations: { entityCard: { document: MANIFEST_DOC, costUnits: 4 } } },
      tenants: { strict: {}, open: {} },
      routes: [{ name: 'graphql', upstream: backend.url, filters: [{ name: 'tenant' }, { name: 'persisted', safelist: { mode: 'off', tenants: { strict: 'enforce' } } }] as never }],
    })
  })
  afterAll(async () => {
    await proxy?.close()
    await backend?.close()
  })

  it('runs under enforce as its manifest id, and is counted as that id', async () => {
    sent.length = 0
    const r = await client('strict').query({ query: ENTITY_CARD, variables: { id: '2' }, fetchPolicy: 'network-only' })
    expect(r.data).toEqual({ entity: { __typename: 'Entity', id: '2', name: 'Entity 2' } })
    // What Apollo Client sent is not the manifest's text: the match is by meaning, not by bytes.
    expect(sent).toHaveLength(1)
    expect(sent[0]).not.toBe(MANIFEST_DOC)
    expect(sent[0]!.indexOf('fragment Names')).toBeLessThan(sent[0]!.indexOf('fragment Ids'))
    await expect.poll(byId, { timeout: 3000 }).toBe(1)
  })

  it('with the safelist off it is priced and counted as its id too', async () => {
    const before = await byId()
    const r = await client('open').query({ query: ENTITY_CARD, variables: { id: '3' }, fetchPolicy: 'network-only' })
    expect(r.data).toEqual({ entity: { __typename: 'Entity', id: '3', name: 'Entity 3' } })
    await expect.poll(byId, { timeout: 3000 }).toBe(before + 1)
  })

  it('a document that differs in substance (fields in another order, a fragment fewer) is still refused', async () => {
    for (const query of [
      'query EntityCard($id: ID!) { entity(id: $id) { ...Names ...Ids __typename } } fragment Ids on Entity { __typename id } fragment Names on Entity { name __typename }',
      'query EntityCard($id: ID!) { entity(id: $id) { ...Ids __typename } } fragment Ids on Entity { id __typename }',
      'query EntityCard($id: ID!) { entity(id: $id) { ...Names ...Ids __typename } } fragment Ids on Entity { id __typename } fragment Names on Entity { name __typename } fragment Extra on Entity { id }',
    ]) {
      const res = await request(`${proxy.url}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant-id': 'strict' }, body: JSON.stringify({ query, variables: { id: '1' } }) })
      expect(res.statusCode).toBe(400)
      expect(((await res.body.json()) as { errors: { extensions: { code: string } }[] }).errors[0]!.extensions.code).toBe('PERSISTED_QUERY_NOT_ALLOWED')
    }
  })
})
