export { Deployer } from './deployer.ts'
export type { DeployerInit, DeployOptions } from './deployer.ts'
export { InputStager } from './inputs.ts'
export { Replicas } from './replicas.ts'
