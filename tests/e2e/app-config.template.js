/* The OHIF viewer's configuration for the browser tests, served in place of the package's
 * own app-config.js: one DICOMweb data source, the archive under test.
 *
 * The test server replaces the three placeholders below with JSON strings: the archive's
 * DICOMweb root (on another origin than the viewer), its WADO-URI endpoint, and a bearer
 * token for it.
 *
 * Authentication: without an OpenID Connect provider configured, OHIF's user authentication
 * service supplies no Authorization header. The DICOMweb data source (and the image loader)
 * ask that service for the header on every request (QIDO-RS, metadata, frames, bulk data),
 * so the token is installed there. OHIF calls `window.config` with its services manager
 * when it is a function; the service is registered only after that call, but before the
 * data source is initialized, and the data source calls its `onConfiguration` hook as it
 * initializes (before the study list or a viewer queries it): that is where the token is
 * set. (OHIF also takes a `?token=` URL parameter, but only on viewer routes, not on the
 * study list.)
 */
window.config = ({ servicesManager }) => {
  const dicomWebRoot = __DICOMWEB_ROOT__;
  const wadoUriRoot = __WADO_URI_ROOT__;
  const token = __TOKEN__;

  const useToken = () =>
    servicesManager.services.userAuthenticationService.setServiceImplementation({
      getAuthorizationHeader: () => ({ Authorization: `Bearer ${token}` }),
    });

  return {
    routerBasename: '/',
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    investigationalUseDialog: { option: 'never' },
    maxNumberOfWebWorkers: 2,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    showErrorDetails: 'always',
    defaultDataSourceName: 'filmless',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'filmless',
        configuration: {
          friendlyName: 'Filmless',
          name: 'filmless',
          qidoRoot: dicomWebRoot,
          wadoRoot: dicomWebRoot,
          wadoUriRoot,
          qidoSupportsIncludeField: true,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          staticWado: false,
          omitQuotationForMultipartRequest: true,
          bulkDataURI: { enabled: true },
          onConfiguration: configuration => {
            useToken();
            return configuration;
          },
        },
      },
    ],
  };
};
