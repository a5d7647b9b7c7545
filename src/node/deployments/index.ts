export { Deployments, workloadsOf } from './engine.ts'
export { Places } from './places.ts'
