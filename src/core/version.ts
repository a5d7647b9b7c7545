/** The version of Xenos a host runs, in its host advert and the API's OpenAPI document. */
export const XENOS_VERSION = '0.1.0'
