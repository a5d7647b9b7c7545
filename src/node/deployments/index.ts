export { Checkpoints } from './checkpoints.ts'
export { Deployments } from './engine.ts'
export { workloadsOf } from './order.ts'
export { Places } from './places.ts'
